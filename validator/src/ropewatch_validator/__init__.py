"""ropewatch validator: fetch a CVAT job, match auto vs reference shapes, measure, report, alert."""

"""The application layer: one use case per module, as plain functions over frozen typed data.

``cli/`` parses arguments, calls one function here and turns its result (or its ``RopewatchError``)
into output and an exit code. Nothing below ``cli/`` reads an argparse namespace.
"""

(function () {
  var err = document.getElementById("filter-error"), cls = document.getElementById("filter-class");
  function apply() {
    var n = 0;
    document.querySelectorAll("#objects tbody tr").forEach(function (tr) {
      var show = (!err.value || tr.dataset.error === err.value) && (!cls.value || tr.dataset.class === cls.value);
      tr.hidden = !show; if (show) { n += 1; }
    });
    document.getElementById("object-count").textContent = n;
  }
  err.addEventListener("change", apply); cls.addEventListener("change", apply);
})();

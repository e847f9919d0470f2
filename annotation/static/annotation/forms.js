/* Small form behaviours without inline handlers (CSP-friendly): a <select data-autosubmit> submits its form. */
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    const el = event.target;
    if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) el.form.requestSubmit();
  });
})();

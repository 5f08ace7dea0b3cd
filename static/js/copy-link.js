// "Copy" buttons: copy the text of the element named by data-copy-target to the clipboard.
(function () {
  "use strict";
  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copyTarget);
      // The status beside this button (a page may hold several), else the page's one.
      var status = (button.parentElement && button.parentElement.querySelector("[data-copy-status]")) ||
        document.querySelector("[data-copy-status]");
      if (!field) { return; }
      function done(text) { if (status) { status.textContent = text; } }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(function () { done("Copied."); },
          function () { done("Select the text and copy it."); });
      } else {
        field.focus();
        field.select();
        done(document.execCommand("copy") ? "Copied." : "Select the text and copy it.");
      }
    });
  });
})();

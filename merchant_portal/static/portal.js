/* Shared by every page: a form marked data-once is sent once, however often its button is tapped. */
(function () {
  "use strict";
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
      // Disabled after this tick, so that the browser still sends the form being submitted.
      setTimeout(function () {
        form.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
      }, 0);
    });
  });
  // A secret carried in the URL's fragment (#t=...) never reaches a server's or a proxy's logs: copy it into
  // the form, then drop it from the address bar and the history.
  document.querySelectorAll("form[data-from-fragment]").forEach(function (form) {
    var name = form.dataset.fromFragment;
    var value = new URLSearchParams(window.location.hash.slice(1)).get(name);
    if (value) {
      form.elements[name].value = value;
      window.history.replaceState(null, "", window.location.pathname);
    }
  });
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.submit();
  });
})();

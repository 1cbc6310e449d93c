// Decision forms (approve, reject, cancel): htmx leaves a 4xx or 5xx
// answer unswapped, so a refusal (no scope, the reservation ended, another
// origin) would leave the button silent. Within a decision form the
// refusal is swapped into the form's error element instead, and not
// reported as an htmx error. Everything else keeps htmx's defaults.
document.addEventListener("htmx:beforeSwap", function (e) {
  var target = e.detail.target;
  if (e.detail.xhr.status >= 400 && target && target.closest && target.closest("[data-decisions]")) {
    e.detail.shouldSwap = true;
    e.detail.isError = false;
  }
});

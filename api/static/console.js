// Live parts of console pages: every few seconds, ask the server for the page's live part
// (X-Console-Live: 1) and put it in place. Without JavaScript the pages work; a reload updates.
(function () {
  "use strict";
  var EVERY_MS = 3000;
  function refresh(region) {
    fetch(region.getAttribute("data-live"), {
      headers: { "X-Console-Live": "1" }, credentials: "same-origin", cache: "no-store"
    }).then(function (answer) {
      if (answer.redirected || !answer.ok) { return null; } // signed out: leave the page as is
      return answer.text();
    }).then(function (html) {
      if (html !== null && html !== undefined) { region.innerHTML = html; }
    }).catch(function () { /* a venue's WiFi drops: try again next time */ })
      .then(function () { setTimeout(function () { refresh(region); }, EVERY_MS); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var regions = document.querySelectorAll("[data-live]");
    for (var i = 0; i < regions.length; i++) {
      (function (region) { setTimeout(function () { refresh(region); }, EVERY_MS); })(regions[i]);
    }
  });
})();

/* Draw every Plotly chart on the page from its JSON data island.
 *
 * The server renders <div class="chart" data-figure="ID"> next to
 * <script type="application/json" id="ID"> (Django's json_script). No inline script is
 * needed, so the Content-Security-Policy can stay script-src 'self'. Charts that htmx
 * swaps in later (the report body reloads as buckets finish) are drawn on htmx:afterSettle.
 */
(function () {
  "use strict";

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };

  function drawCharts(root) {
    if (typeof window.Plotly === "undefined") {
      return;
    }
    var charts = root.querySelectorAll(".chart[data-figure]:not([data-drawn])");
    Array.prototype.forEach.call(charts, function (div) {
      var island = document.getElementById(div.getAttribute("data-figure"));
      if (!island) {
        return;
      }
      div.setAttribute("data-drawn", "");
      var figure = JSON.parse(island.textContent);
      window.Plotly.newPlot(div, figure.data, figure.layout || {}, CONFIG);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
  });
  // Free Plotly's listeners (window resize) of charts that a swap is about to remove.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (typeof window.Plotly === "undefined" || !event.detail.target) {
      return;
    }
    var drawn = event.detail.target.querySelectorAll(".chart[data-drawn]");
    Array.prototype.forEach.call(drawn, function (div) {
      window.Plotly.purge(div);
    });
  });
  document.addEventListener("htmx:afterSettle", function () {
    drawCharts(document);
  });
})();

/* Loaded between vendor/require.js and vendor/html-manager/embed-amd.js on pages with ipywidgets
   (_config.yml nb_ipywidgets_js). Makes the HTML widget manager work offline with MathJax 3.

   1. embed-amd.js loads its fonts from the folder of its AMD modules ("@jupyter-widgets/html-manager/dist/...",
      "@jupyter-widgets/..."),
      which require.js would resolve next to the page (book/@jupyter-widgets/...). Point that module path at the
      vendored copy, found relative to this script, so it works for pages at any depth and from file://.
   2. ipywidgets typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue), which MathJax 3 lacks
      ("Cannot read properties of undefined (reading 'Queue')"). Give every MathJax object a Hub.Queue that calls
      MathJax 3's typesetPromise once MathJax is ready. */
(function () {
  "use strict";
  var here = (document.currentScript && document.currentScript.src) || "";
  var staticDir = here.replace(/[?#].*$/, "").replace(/[^\/]*$/, "");
  if (window.require && window.require.config) {
    var dir = staticDir + "vendor/html-manager";
    window.require.config({paths: {"@jupyter-widgets/html-manager/dist": dir, "@jupyter-widgets": dir}});
  }

  function typeset(el) {
    var mj = window.MathJax;
    if (mj && mj.startup && mj.startup.promise && mj.typesetPromise) {
      mj.startup.promise.then(function () { return mj.typesetPromise(el ? [el] : undefined); })
        .catch(function (e) { console.warn("MathJax typeset of a widget failed:", e); });
    } else {
      setTimeout(function () { typeset(el); }, 100);  // MathJax 3 is loaded with `defer`: wait for it
    }
  }
  var hub = {
    Queue: function () {
      for (var i = 0; i < arguments.length; i++) {
        var job = arguments[i];
        if (Array.isArray(job) && job[0] === "Typeset") typeset(job[2]);
        else if (typeof job === "function") job();
      }
    }
  };
  function addHub(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) {
      try { mj.Hub = hub; } catch (e) { /* frozen object: nothing to do */ }
    }
  }
  var current = window.MathJax;
  addHub(current);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true, enumerable: true,
      get: function () { return current; },
      set: function (v) { current = v; addHub(v); }
    });
  } catch (e) { /* keep whatever is there */ }
})();

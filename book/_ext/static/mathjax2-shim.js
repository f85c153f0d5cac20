// ipywidgets' HTML manager typesets widget labels with the MathJax 2 API (MathJax.Hub.Queue);
// the book loads MathJax 3, which has no Hub.  Route those calls to MathJax 3's typesetter.
(function () {
  function install() {
    if (window.MathJax && !window.MathJax.Hub) {
      window.MathJax.Hub = {
        Queue: function () {
          if (window.MathJax.typesetPromise) { window.MathJax.typesetPromise(); }
        },
      };
    }
  }
  install();
  document.addEventListener("DOMContentLoaded", install);
})();

// GraphiQL on this server's /graphql, from the vendored builds (no request leaves the server).
// Signed in, it sends the session's CSRF token (from the page's meta tag) so that mutations run as that account.
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var params = new URLSearchParams(window.location.search);
  // signed in (the session cookie): mutations must repeat the session's CSRF token, which the page carries
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var headers = csrf ? { "x-csrf-token": csrf.getAttribute("content") } : {};
  var fetcher = GraphiQL.createFetcher({ url: root.getAttribute("data-endpoint") || "/graphql", headers: headers });
  var props = { fetcher: fetcher, defaultEditorToolsVisibility: true };
  if (params.get("query")) props.query = params.get("query");
  if (params.get("variables")) props.variables = params.get("variables");
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, props));
})();

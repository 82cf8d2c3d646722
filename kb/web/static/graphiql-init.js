// GraphiQL on this server's /graphql, from the vendored builds (no request leaves the server).
(function () {
  "use strict";
  var root = document.getElementById("graphiql");
  var params = new URLSearchParams(window.location.search);
  var fetcher = GraphiQL.createFetcher({ url: root.getAttribute("data-endpoint") || "/graphql" });
  var props = { fetcher: fetcher, defaultEditorToolsVisibility: true };
  if (params.get("query")) props.query = params.get("query");
  if (params.get("variables")) props.variables = params.get("variables");
  ReactDOM.createRoot(root).render(React.createElement(GraphiQL, props));
})();

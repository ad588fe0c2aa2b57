package localcloud

import "net/http"

const executeAPIPrefix = "/_aws/execute-api/"

type gatewayState struct{ apis map[string]any }

func (g *gatewayState) init() { g.apis = map[string]any{} }

func (s *Server) gatewayRoutes(m *http.ServeMux) {}

func executeAPIHost(host string) (string, bool) { return "", false }

func (s *Server) serveExecuteAPI(w http.ResponseWriter, r *http.Request, apiID, path string) {}

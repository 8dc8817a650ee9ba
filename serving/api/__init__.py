"""The online API's front doors and wire formats: the HTTP app (http_app), the OpenAI route
(openai_route, its wire format openai_wire), Cohere's /v2/embed (cohere_route), the rerank and
sparse routes (rerank_routes, sparse_routes), the gRPC servicer (grpc_servicer), request bodies
and headers (http_bodies), API keys (auth), the one check of what a request asks (admission),
what every door shares (ingress_core) and the one error map (errors)."""

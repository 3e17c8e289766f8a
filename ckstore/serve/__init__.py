"""`ckstore serve`: remotes under a directory served over HTTP(S) with scoped bearer tokens, server-side ref
protection, an audit log and request limits (docs/serve.md). A face, like `ui`: it stands on the transport, engine
and storage layers and nothing imports it but the CLI. Starlette and uvicorn are imported with `app` and
`server`, never by this package itself."""

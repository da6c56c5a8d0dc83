//! Requests the gateway makes for itself: an embedding for the semantic cache, a label
//! from the classifier. They go through one of the gateway's routes — its deployments in
//! the router's order, one try each, health marked as for client requests — and are not
//! charged to any key or logged as requests of their own (the client request's log line
//! says what they found).

use crate::proxy::Endpoint;
use crate::router::plan;
use crate::Gateway;
use serde_json::{Map, Value};
use std::time::Instant;

/// Sends `body` (without `model`: each deployment's own is filled in) to route `route`
/// until a deployment answers with a reply `accept` takes. Returns what `accept` made of
/// it and the backend's name, or the last failure.
pub async fn call<T>(
    gw: &Gateway,
    route: usize,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    accept: impl Fn(&Value) -> Result<T, String>,
) -> Result<(T, String), String> {
    let targets = plan(&gw.config, &gw.health, route, 0, None, Instant::now(), &mut rand::rng()).map_err(|_| "the route has no deployment".to_string())?;
    let mut last = format!("route `{}` has no deployment", gw.config.models[route].name);
    for t in targets {
        let d = &gw.config.models[t.route].deployments[t.deployment];
        let backend = &gw.backends[d.backend];
        let health = &gw.health[d.backend];
        let mut body = body.clone();
        body.insert("model".into(), d.model.clone().into());
        let t0 = Instant::now();
        let result = {
            let _busy = health.start();
            backend.call(endpoint, &body).await
        };
        match result {
            Ok(v) => {
                health.success(t0.elapsed());
                match accept(&v) {
                    Ok(x) => return Ok((x, backend.config.name.clone())),
                    Err(e) => last = format!("{}: {e}", backend.config.name),
                }
            }
            Err(f) => {
                if f.is_backend_fault() {
                    health.failure(&gw.config.health, Instant::now());
                }
                last = format!("{}: {}", backend.config.name, f.message());
            }
        }
    }
    Err(last)
}

//! Which deployments a request tries, in order: its route's deployments ordered by the
//! route's strategy (ejected backends last), then each fallback route's in turn
//! (breadth first, each route once). Routes whose context window is smaller than the
//! request are passed over, so an over-long prompt goes straight to a model with room.

use crate::config::{Config, Strategy};
use crate::health::BackendHealth;
use rand::Rng;
use std::time::Instant;

/// One deployment of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub route: usize,
    pub deployment: usize,
}

/// No route reachable from the requested one has a window for the prompt.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub estimate: u64,
    pub largest: u32,
}

/// Routes reachable from `route` through fallbacks, the route itself first.
pub fn route_chain(config: &Config, route: usize) -> Vec<usize> {
    let mut chain = vec![route];
    let mut i = 0;
    while i < chain.len() {
        for &f in &config.models[chain[i]].fallbacks {
            if !chain.contains(&f) {
                chain.push(f);
            }
        }
        i += 1;
    }
    chain
}

/// The targets a request with an estimated `prompt_tokens` tries, in order.
pub fn plan(config: &Config, health: &[BackendHealth], route: usize, prompt_tokens: u64, now: Instant, rng: &mut impl Rng) -> Result<Vec<Target>, TooLong> {
    let mut out = Vec::new();
    let mut largest = 0;
    for r in route_chain(config, route) {
        let m = &config.models[r];
        if let Some(w) = m.context_window {
            largest = largest.max(w);
            if prompt_tokens > w as u64 {
                continue;
            }
        }
        let mut order: Vec<usize> = (0..m.deployments.len()).collect();
        let backend = |d: usize| &health[m.deployments[d].backend];
        match m.strategy {
            Strategy::Ordered => {}
            Strategy::Weighted => {
                // Efraimidis–Spirakis: sorting by u^(1/w) draws an order without replacement
                // in which each deployment comes first with probability w / Σw.
                let mut keyed: Vec<(f64, usize)> = order.iter().map(|&d| (rng.random::<f64>().powf(1.0 / m.deployments[d].weight as f64), d)).collect();
                keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
                order = keyed.into_iter().map(|(_, d)| d).collect();
            }
            Strategy::LeastBusy => order.sort_by_key(|&d| backend(d).in_flight()),
            Strategy::LowestLatency => order.sort_by_key(|&d| backend(d).latency().unwrap_or_default()),
        }
        // Stable: healthy first, each group in strategy order.
        order.sort_by_key(|&d| backend(d).is_ejected(now));
        out.extend(order.into_iter().map(|deployment| Target { route: r, deployment }));
    }
    if out.is_empty() {
        return Err(TooLong { estimate: prompt_tokens, largest });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthPolicy;
    use rand::SeedableRng;
    use std::path::Path;
    use std::time::Duration;

    const CONFIG: &str = r#"
[[backend]]
name = "a"
kind = "lamina"
url = "http://127.0.0.1:1/v1"
[[backend]]
name = "b"
kind = "openai"
url = "http://127.0.0.1:2/v1"
[[model]]
name = "small"
context_window = 100
strategy = "weighted"
deployments = [{ backend = "a", model = "m", weight = 3 }, { backend = "b", model = "m", weight = 1 }]
fallbacks = ["big"]
[[model]]
name = "big"
context_window = 1000
deployments = [{ backend = "b", model = "m2" }]
"#;

    #[test]
    fn weights_set_how_often_each_deployment_goes_first() {
        let c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first_a = 0;
        for _ in 0..4000 {
            let p = plan(&c, &health, 0, 10, Instant::now(), &mut rng).unwrap();
            assert_eq!(p.len(), 3);
            assert_eq!(p[2], Target { route: 1, deployment: 0 });
            first_a += (p[0].deployment == 0) as usize;
        }
        // Expected 3000 of 4000; the binomial standard deviation is 27.
        assert!((2850..=3150).contains(&first_a), "{first_a}");
    }

    #[test]
    fn ejected_backends_go_last_and_long_prompts_skip_small_windows() {
        let mut c = Config::parse(CONFIG, Path::new("t.toml")).unwrap();
        c.models[0].strategy = Strategy::Ordered;
        let health: Vec<BackendHealth> = (0..2).map(|_| BackendHealth::default()).collect();
        let now = Instant::now();
        health[0].failure(&HealthPolicy { failures: 1, cooldown: Duration::from_secs(60) }, now);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = plan(&c, &health, 0, 10, now, &mut rng).unwrap();
        assert_eq!(p.iter().map(|t| (t.route, t.deployment)).collect::<Vec<_>>(), vec![(0, 1), (0, 0), (1, 0)]);
        let p = plan(&c, &health, 0, 500, now, &mut rng).unwrap();
        assert_eq!(p, vec![Target { route: 1, deployment: 0 }]);
        assert_eq!(plan(&c, &health, 0, 5000, now, &mut rng).unwrap_err(), TooLong { estimate: 5000, largest: 1000 });
    }
}

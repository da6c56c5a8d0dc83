//! LoRA adapters: low-rank updates `W' = W + s · B·A` of a frozen base's linear layers,
//! with `A` (r × in), `B` (out × r) and `s = α / r` (or `α / √r`, rsLoRA).
//!
//! The in-memory form ([`LoraAdapter`]: one [`LoraModule`] per adapted layer, keyed by the
//! layer's Hugging Face module name, e.g. `model.layers.3.self_attn.q_proj`) is what the
//! trainers produce and what inference applies (resolved against a model by [`crate::Model::prepare_lora`]). On disk an adapter
//! is PEFT's folder: `adapter_config.json` and `adapter_model.safetensors` with tensors named
//! `base_model.model.{module}.lora_A.weight` / `.lora_B.weight`, so Python `peft` loads
//! ours and we load its. The conversion lives here, at the file boundary, and nowhere else.

use crate::load::safetensors_parse;
use lamina_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix PEFT puts before the base model's module names in its tensor names.
const PEFT_PREFIX: &str = "base_model.model.";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The projections a decoder layer has, by the short names the command line takes
/// (`q,k,v,o,gate,up,down`) and the module names Hugging Face (and PEFT) use.
pub const LLAMA_TARGETS: [(&str, &str); 7] =
    [("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj"), ("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")];

/// Hyper-parameters of an adapter (the part of PEFT's `LoraConfig` Lamina uses).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank r ≥ 1.
    pub r: usize,
    /// α: the update is scaled by α / r.
    pub alpha: f64,
    /// Dropout on the adapter's input during training (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// Module names (last path component, e.g. `q_proj`) the adapter applies to.
    pub targets: Vec<String>,
    /// rsLoRA: scale by α / √r instead of α / r.
    pub rslora: bool,
}

impl LoraConfig {
    /// A config for `targets` given as short names (`q`, `gate`, …) or module names.
    pub fn new(r: usize, alpha: f64, dropout: f64, targets: &[&str]) -> Result<LoraConfig> {
        let targets = targets.iter().map(|t| LLAMA_TARGETS.iter().find(|(short, _)| short == t).map_or(t.to_string(), |(_, long)| long.to_string())).collect();
        let c = LoraConfig { r, alpha, dropout, targets, rslora: false };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::InvalidConfig("LoRA rank r must be at least 1".into()));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::InvalidConfig(format!("LoRA alpha must be positive, not {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidConfig(format!("LoRA dropout must be in [0, 1), not {}", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidConfig("LoRA needs at least one target module".into()));
        }
        Ok(())
    }

    /// The factor on `B·A`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Whether the layer `module` (a full module name) is one this config adapts.
    pub fn targets_module(&self, module: &str) -> bool {
        let last = module.rsplit('.').next().unwrap_or(module);
        self.targets.iter().any(|t| t == last)
    }
}

/// One adapted layer: `A` row-major (r × in), `B` row-major (out × r).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    pub r: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// A LoRA adapter: its config and the update of every adapted layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    /// By Hugging Face module name (`model.layers.0.self_attn.q_proj`).
    pub modules: BTreeMap<String, LoraModule>,
    /// The base model it was trained on, as recorded (PEFT's `base_model_name_or_path`).
    pub base_model: Option<String>,
}

/// PEFT's `adapter_config.json`, the fields Lamina reads and writes; others PEFT writes are
/// accepted and ignored on load.
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f64,
    target_modules: TargetModules,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default = "bias_none")]
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default)]
    rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
}

/// A tensor's shape and values.
type Shaped = (Vec<usize>, Vec<f32>);

fn bias_none() -> String {
    "none".into()
}

/// PEFT writes `target_modules` as a list, or as one regular expression string.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl LoraAdapter {
    /// The config's scale as the f32 the kernels use.
    pub fn scale(&self) -> f32 {
        self.config.scale() as f32
    }

    /// Reads a PEFT adapter folder. Every adapted module must have both matrices with a
    /// consistent rank; anything else PEFT could have put there that Lamina would silently
    /// drop (trained biases, `modules_to_save`, per-module ranks) is an error naming it.
    pub fn load(dir: &Path) -> Result<LoraAdapter> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = lamina_core::fs::read_regular_to_string(&cfg_path)?;
        let pc: PeftConfig = serde_json::from_str(&text).map_err(|e| Error::invalid_file(&cfg_path, e))?;
        let bad = |why: String| Error::invalid_file(&cfg_path, why);
        if pc.peft_type != "LORA" {
            return Err(bad(format!("peft_type `{}` is not LORA", pc.peft_type)));
        }
        if pc.bias != "none" {
            return Err(bad(format!("bias = `{}`: adapters with trained biases are not supported", pc.bias)));
        }
        if !pc.rank_pattern.is_empty() || !pc.alpha_pattern.is_empty() {
            return Err(bad("per-module ranks or alphas (rank_pattern / alpha_pattern) are not supported".into()));
        }
        if pc.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(bad("modules_to_save (fully trained extra modules) is not supported".into()));
        }
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = lamina_core::fs::read_regular(&weights_path)?;
        let tensors = safetensors_parse(&bytes, &weights_path)?;
        let mut halves: BTreeMap<String, (Option<Shaped>, Option<Shaped>)> = BTreeMap::new();
        for (name, dims, data) in tensors {
            let module_and_kind = name.strip_prefix(PEFT_PREFIX).unwrap_or(&name);
            let (module, is_a) = if let Some(m) = module_and_kind.strip_suffix(".lora_A.weight") {
                (m, true)
            } else if let Some(m) = module_and_kind.strip_suffix(".lora_B.weight") {
                (m, false)
            } else {
                return Err(Error::invalid_file(&weights_path, format!("tensor `{name}` is not a LoRA A or B matrix")));
            };
            let slot = halves.entry(module.to_string()).or_default();
            if is_a {
                slot.0 = Some((dims, data));
            } else {
                slot.1 = Some((dims, data));
            }
        }
        let targets = match pc.target_modules {
            TargetModules::List(l) => l,
            // A pattern: the modules present say what it matched.
            TargetModules::Pattern(_) => {
                let mut t: Vec<String> = halves.keys().map(|m| m.rsplit('.').next().unwrap_or(m).to_string()).collect();
                t.dedup();
                t.sort();
                t.dedup();
                t
            }
        };
        let config = LoraConfig { r: pc.r, alpha: pc.lora_alpha, dropout: pc.lora_dropout, targets, rslora: pc.use_rslora };
        config.validate().map_err(|e| bad(e.to_string()))?;
        let mut modules = BTreeMap::new();
        for (module, (a, b)) in halves {
            let (Some((ad, a)), Some((bd, b))) = (a, b) else {
                return Err(Error::invalid_file(&weights_path, format!("module `{module}` has only one of lora_A and lora_B")));
            };
            if ad.len() != 2 || bd.len() != 2 || ad[0] != config.r || bd[1] != config.r {
                return Err(Error::invalid_file(
                    &weights_path,
                    format!("module `{module}`: lora_A {ad:?} and lora_B {bd:?} are not (r, in) and (out, r) with r = {}", config.r),
                ));
            }
            modules.insert(module, LoraModule { r: config.r, in_dim: ad[1], out_dim: bd[0], a, b });
        }
        if modules.is_empty() {
            return Err(Error::invalid_file(&weights_path, "the adapter has no LoRA matrices"));
        }
        Ok(LoraAdapter { config, modules, base_model: pc.base_model_name_or_path })
    }

    /// Writes the adapter as a PEFT folder (both files atomically; the weights first, so a
    /// crash leaves either the old adapter, or new weights beside an old config of the same
    /// shapes, never a half-written file).
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.config.validate()?;
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (module, m) in &self.modules {
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            owned.push((format!("{PEFT_PREFIX}{module}.lora_A.weight"), vec![m.r, m.in_dim], bytes(&m.a)));
            owned.push((format!("{PEFT_PREFIX}{module}.lora_B.weight"), vec![m.out_dim, m.r], bytes(&m.b)));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Other(format!("LoRA tensor {n}: {e}")))
            })
            .collect::<Result<_>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Other(format!("serializing the adapter: {e}")))?;
        lamina_core::fs::write_bytes_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
        let pc = PeftConfig {
            peft_type: "LORA".into(),
            r: self.config.r,
            lora_alpha: self.config.alpha,
            lora_dropout: self.config.dropout,
            target_modules: TargetModules::List(self.config.targets.clone()),
            use_rslora: self.config.rslora,
            bias: "none".into(),
            fan_in_fan_out: false,
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: self.base_model.clone(),
            inference_mode: true,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            modules_to_save: None,
        };
        let json = serde_json::to_string_pretty(&pc).map_err(|e| Error::Other(e.to_string()))?;
        lamina_core::fs::write_bytes_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
    }

    /// Checks that every module exists in a base with these `(module, in, out)` layers and
    /// has their shape; the error names the first that does not.
    pub fn check_against(&self, layers: &[(String, usize, usize)]) -> Result<()> {
        for (module, m) in &self.modules {
            let Some((_, i, o)) = layers.iter().find(|(n, _, _)| n == module) else {
                return Err(Error::InvalidInput(format!("the adapter's module `{module}` is not a linear layer of this model (an adapter for another base?)")));
            };
            if (m.in_dim, m.out_dim) != (*i, *o) {
                return Err(Error::ShapeMismatch {
                    name: format!("{module} (adapter for another base?)"),
                    expected: vec![*o, *i],
                    actual: vec![m.out_dim, m.in_dim],
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> LoraAdapter {
        let m = LoraModule { r: 2, in_dim: 3, out_dim: 4, a: (0..6).map(|i| i as f32 * 0.5 - 1.0).collect(), b: (0..8).map(|i| 0.25 * i as f32).collect() };
        let mut modules = BTreeMap::new();
        modules.insert("model.layers.0.self_attn.q_proj".to_string(), m);
        LoraAdapter { config: LoraConfig::new(2, 8.0, 0.0, &["q", "v"]).unwrap(), modules, base_model: Some("base".into()) }
    }

    #[test]
    fn peft_folder_round_trip_with_peft_names() {
        let dir = tempfile::tempdir().unwrap();
        let a = adapter();
        a.save(dir.path()).unwrap();
        assert_eq!(LoraAdapter::load(dir.path()).unwrap(), a);
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        assert_eq!(names, ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]);
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
        assert_eq!(cfg["lora_alpha"], 8.0);
    }

    #[test]
    fn delta_is_scaled_b_times_a() {
        let a = adapter();
        let m = &a.modules["model.layers.0.self_attn.q_proj"];
        let d = crate::adapter::LinearLora::new(m.r, m.in_dim, m.out_dim, m.a.clone(), &m.b, a.scale()).unwrap().delta();
        assert_eq!(a.scale(), 4.0);
        // Row 1, column 2: s · Σ_k B[1,k] A[k,2] = 4 · (0.5 · 0.0 + 0.75 · 1.5).
        assert_eq!(d[3 + 2], 4.0 * (0.5 * 0.0 + 0.75 * 1.5));
    }

    #[test]
    fn bad_adapters_are_named_errors() {
        assert!(LoraConfig::new(0, 8.0, 0.0, &["q"]).unwrap_err().to_string().contains("rank"));
        let dir = tempfile::tempdir().unwrap();
        adapter().save(dir.path()).unwrap();
        let e = adapter().check_against(&[("model.layers.0.self_attn.q_proj".into(), 5, 4)]).unwrap_err().to_string();
        assert!(e.contains("q_proj") && e.contains("another base"), "{e}");
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"peft_type":"LORA","r":2,"lora_alpha":8,"target_modules":["q_proj"],"bias":"all"}"#).unwrap();
        assert!(LoraAdapter::load(dir.path()).unwrap_err().to_string().contains("bias"));
        std::fs::write(dir.path().join(CONFIG_FILE), r#"{"peft_type":"LORA","r":3,"lora_alpha":8,"target_modules":["q_proj"]}"#).unwrap();
        assert!(LoraAdapter::load(dir.path()).unwrap_err().to_string().contains("r = 3"));
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
        assert!(LoraAdapter::load(dir.path()).is_err());
    }
}

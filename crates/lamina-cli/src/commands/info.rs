//! `lamina info`: what a model is.

use crate::common::ModelArgs;
use anyhow::Result;
use clap::Args;
use std::collections::BTreeMap;

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub model: Option<String>,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let margs = ModelArgs { threads: Some(1), precision: "native".into(), ctx: None, block_size: lamina_model::DEFAULT_BLOCK_SIZE };
    let (model, tok) = crate::common::load(args.model.as_deref(), &margs)?;
    let c = &model.config;
    println!("model:            {}", model.source.display());
    println!("architecture:     {}", c.architecture.name());
    let params = match &model.gguf {
        Some(g) => g.parameter_count(),
        None => {
            let mut n = c.vocab_size * c.hidden_size;
            for l in &model.layers {
                for lin in [&l.q, &l.k, &l.v, &l.o, &l.up, &l.down] {
                    n += lin.rows * lin.cols;
                }
                if let Some(g) = &l.gate {
                    n += g.rows * g.cols;
                }
            }
            n
        }
    };
    println!("parameters:       {} ({:.1} M)", params, params as f64 / 1e6);
    println!("layers:           {}", c.num_layers);
    println!("hidden size:      {}", c.hidden_size);
    println!("heads:            {} query, {} key/value, {} dims each", c.num_heads, c.num_kv_heads, c.head_dim);
    println!("MLP width:        {}", c.ffn_dim);
    println!("context length:   {}", c.context_length);
    if c.rope_dim > 0 {
        println!(
            "rope:             base {}, {} dims{}",
            c.rope_theta,
            c.rope_dim,
            c.rope_scaling.as_ref().map(|s| format!(", scaling {s:?}")).unwrap_or_default()
        );
    }
    println!("tied embeddings:  {}", c.tied_embeddings);
    if let Some(g) = &model.gguf {
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for t in g.tensors.values() {
            *types.entry(t.dtype.name()).or_default() += 1;
        }
        let list: Vec<String> = types.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        println!("tensor types:     {}", list.join(", "));
        println!("format:           GGUF v{}", g.version);
    } else {
        println!("tensor types:     F32 (from safetensors)");
    }
    println!("vocabulary size:  {}", tok.vocab_size());
    let name = |id: Option<u32>| id.map(|i| format!("{} ({i})", tok.id_to_token(i).unwrap_or_default())).unwrap_or_else(|| "none".into());
    println!("BOS / EOS:        {} / {}", name(tok.bos_id()), name(tok.eos_id()));
    let eog: Vec<String> = tok.end_of_generation_ids().iter().map(|&i| format!("{} ({i})", tok.id_to_token(i).unwrap_or_default())).collect();
    println!("end of generation: {}", eog.join(", "));
    println!("add BOS:          {}", tok.add_bos());
    println!("chat template:    {}", if tok.chat_template().is_some() { "yes" } else { "no" });
    println!("weights per token: {:.1} MB", model.weight_bytes_per_token() as f64 / 1e6);
    println!("kernels:          {}", model.kernels.isa.name());
    Ok(())
}

//! Parity of `models::clip_text` with transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`
//! on the tiny random-weight fixtures (`tests/fixtures/parity/MANIFEST.md`, `clip_text.safetensors`;
//! padding and pooling rules in `tools/parity/README.md`).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use storymaker::models::clip_text::{sdxl_text_embeddings, ClipTextConfig, ClipTextModel};
use storymaker::weights::store::TensorStore;

use common::{max_rel_err, parity_fixture};

const TOL: f32 = 1e-4;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn load_model(name: &str, with_projection: bool) -> Result<ClipTextModel, Box<dyn std::error::Error>> {
    let cfg = ClipTextConfig::from_json_file(&parity_fixture(&format!("{name}.config.json")))?;
    let vb = TensorStore::open(&[parity_fixture(&format!("{name}.weights.safetensors"))])?
        .into_var_builder(DType::F32, &Device::Cpu);
    Ok(ClipTextModel::new(vb, &cfg, with_projection)?)
}

fn io() -> Result<HashMap<String, Tensor>, Box<dyn std::error::Error>> {
    Ok(candle_core::safetensors::load(parity_fixture("clip_text.safetensors"), &Device::Cpu)?)
}

fn get<'a>(io: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    io.get(key).unwrap_or_else(|| panic!("clip_text.safetensors has no {key}"))
}

fn check(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = max_rel_err(ours, reference);
    eprintln!("{what}: max rel err {err:.3e}");
    assert!(err < TOL, "{what}: max rel err {err:e} >= {TOL:e}");
}

/// Rows of `last` `[B, T, C]` at `pos[b]`, as `[B, C]`.
fn rows_at(last: &Tensor, pos: &[usize]) -> Result<Tensor, candle_core::Error> {
    let rows = pos.iter().enumerate().map(|(b, &p)| last.i((b, p))).collect::<Result<Vec<_>, _>>()?;
    Tensor::stack(&rows, 0)
}

#[test]
fn clip_l_matches_transformers() -> TestResult {
    let io = io()?;
    let model = load_model("clip_l", false)?;
    let ids = get(&io, "clip_l.input_ids");
    let eos: Vec<usize> = get(&io, "eos_index").to_vec1::<i64>()?.into_iter().map(|p| p as usize).collect();
    assert_eq!(model.eos_positions(ids)?, eos);

    let out = model.forward_all(ids)?;
    check("clip_l.penultimate", &out.penultimate, get(&io, "clip_l.penultimate"));
    let last = out.last_hidden.as_ref().ok_or("forward_all gave no last_hidden")?;
    check("clip_l.last_hidden_state", last, get(&io, "clip_l.last_hidden_state"));
    check("clip_l.pooler_output", &rows_at(last, &eos)?, get(&io, "clip_l.pooler_output"));
    assert!(out.pooled.is_none());

    // the SDXL path skips the last layer and gives the same penultimate
    let fast = model.forward(ids)?;
    assert!(fast.last_hidden.is_none() && fast.pooled.is_none());
    assert_eq!(max_rel_err(&fast.penultimate, &out.penultimate), 0.0);
    Ok(())
}

#[test]
fn clip_g_matches_transformers() -> TestResult {
    let io = io()?;
    let model = load_model("clip_g", true)?;
    let ids = get(&io, "clip_g.input_ids");
    let eos: Vec<usize> = get(&io, "eos_index").to_vec1::<i64>()?.into_iter().map(|p| p as usize).collect();
    assert_eq!(model.eos_positions(ids)?, eos);

    let out = model.forward(ids)?;
    check("clip_g.penultimate", &out.penultimate, get(&io, "clip_g.penultimate"));
    let last = out.last_hidden.as_ref().ok_or("no last_hidden")?;
    check("clip_g.last_hidden_state", last, get(&io, "clip_g.last_hidden_state"));
    check("clip_g.pooled_unprojected", &rows_at(last, &eos)?, get(&io, "clip_g.pooled_unprojected"));
    let pooled = out.pooled.as_ref().ok_or("no pooled")?;
    check("clip_g.text_embeds", pooled, get(&io, "clip_g.text_embeds"));

    // u32 ids give the same result as i64 ids
    let out32 = model.forward(&ids.to_dtype(DType::U32)?)?;
    assert_eq!(max_rel_err(out32.pooled.as_ref().ok_or("no pooled")?, pooled), 0.0);
    Ok(())
}

#[test]
fn sdxl_prompt_embeds_match_the_pipeline() -> TestResult {
    let io = io()?;
    let l = load_model("clip_l", false)?.forward(get(&io, "clip_l.input_ids"))?;
    let g = load_model("clip_g", true)?.forward(get(&io, "clip_g.input_ids"))?;
    let (prompt_embeds, pooled) = sdxl_text_embeddings(&l, &g)?;
    assert_eq!(prompt_embeds.dims(), &[2, 77, 80]);
    check("prompt_embeds", &prompt_embeds, get(&io, "prompt_embeds"));
    check("pooled (text_embeds)", &pooled, get(&io, "clip_g.text_embeds"));
    // the end-to-end fixture recorded the same conditioning through StableDiffusionXLPipeline.encode_prompt
    let e2e = candle_core::safetensors::load(parity_fixture("e2e_txt2img.safetensors"), &Device::Cpu)?;
    check("e2e.prompt_embeds", &prompt_embeds, get(&e2e, "prompt_embeds"));
    check("e2e.add_text_embeds", &pooled, get(&e2e, "add_text_embeds"));

    // encoder 2 without its projection cannot provide the pooled embedding
    let err = sdxl_text_embeddings(&g, &l).unwrap_err().to_string();
    assert!(err.contains("no pooled embedding"), "{err}");
    Ok(())
}

#[test]
fn bad_token_ids_are_rejected() -> TestResult {
    let model = load_model("clip_l", false)?;
    let too_big = Tensor::new(&[[998i64, 5, 1000, 999]], &Device::Cpu)?;
    let err = model.forward(&too_big).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("token id 1000 at row 0, position 2") && err.contains("size 1000"), "{err}");
    let floats = Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?;
    assert!(model.forward(&floats).is_err());
    let too_long = Tensor::zeros((1, 78), DType::U32, &Device::Cpu)?;
    let err = model.forward(&too_long).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("77"), "{err}");
    Ok(())
}

#[test]
fn mis_shaped_weight_names_file_tensor_and_shapes() -> TestResult {
    let cfg = ClipTextConfig::from_json(
        r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
            "num_attention_heads":2,"max_position_embeddings":5,"hidden_act":"gelu","projection_dim":4}"#,
    )?;
    let bad_key = "text_model.encoder.layers.0.mlp.fc1.weight";
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("text_model.embeddings.token_embedding.weight".into(), vec![10, 8]),
        ("text_model.embeddings.position_embedding.weight".into(), vec![5, 8]),
        ("text_model.final_layer_norm.weight".into(), vec![8]),
        ("text_model.final_layer_norm.bias".into(), vec![8]),
        ("text_projection.weight".into(), vec![4, 8]),
        (bad_key.into(), vec![15, 8]), // should be [16, 8]
        ("text_model.encoder.layers.0.mlp.fc1.bias".into(), vec![16]),
        ("text_model.encoder.layers.0.mlp.fc2.weight".into(), vec![8, 16]),
        ("text_model.encoder.layers.0.mlp.fc2.bias".into(), vec![8]),
    ];
    for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        shapes.push((format!("text_model.encoder.layers.0.self_attn.{p}.weight"), vec![8, 8]));
        shapes.push((format!("text_model.encoder.layers.0.self_attn.{p}.bias"), vec![8]));
    }
    for n in ["layer_norm1", "layer_norm2"] {
        shapes.push((format!("text_model.encoder.layers.0.{n}.weight"), vec![8]));
        shapes.push((format!("text_model.encoder.layers.0.{n}.bias"), vec![8]));
    }
    let tensors = shapes
        .into_iter()
        .map(|(k, s)| Ok((k, Tensor::zeros(s, DType::F32, &Device::Cpu)?)))
        .collect::<Result<HashMap<String, Tensor>, candle_core::Error>>()?;
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("text_encoder_2.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;

    let vb = TensorStore::open(std::slice::from_ref(&path))?.into_var_builder(DType::F32, &Device::Cpu);
    let err = match ClipTextModel::new(vb, &cfg, true) {
        Ok(_) => return Err("a mis-shaped fc1.weight was accepted".into()),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    assert!(err.contains(&path.display().to_string()), "file not named: {err}");
    assert!(err.contains(bad_key), "tensor not named: {err}");
    assert!(err.contains("[15, 8]") && err.contains("[16, 8]"), "shapes not named: {err}");
    Ok(())
}

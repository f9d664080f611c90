//! The export layout: panel rectangles for several page and grid settings, caption wrapping,
//! speech bubbles kept inside their panels.

mod export_support;

use export_support::sample_with_images;
use storymaker::export::bubbles::layout_bubble;
use storymaker::export::layout::{page_geometry, LayoutError, PT_PER_MM};
use storymaker::export::text::{measure, ELLIPSIS};
use storymaker::export::{
    build_pages, Arrangement, AspectMode, ExportSettings, LayoutSettings, Orientation, PageSize, Rect,
};
use storymaker::story::panel::BubblePlacement;

const EPS: f32 = 1e-3;

/// Every cell inside the content area, none overlapping, in reading order, frames with captions
/// right under them.
fn check_cells(s: &LayoutSettings) -> storymaker::export::layout::PageGeometry {
    let g = page_geometry(s).unwrap();
    for (i, c) in g.cells.iter().enumerate() {
        assert!(g.content.contains_rect(&c.frame, EPS), "cell {i} frame {:?} outside {:?}", c.frame, g.content);
        let cap = c.caption.expect("captions are on");
        assert!(g.content.contains_rect(&cap, EPS), "caption {i} outside");
        assert!(cap.y >= c.frame.bottom() && (cap.x - c.frame.x).abs() < EPS && (cap.w - c.frame.w).abs() < EPS);
        if let Some(t) = g.title {
            assert!(c.frame.y >= t.bottom(), "cell {i} under the title");
        }
        if let Some(f) = g.footer {
            assert!(cap.bottom() <= f.y + EPS, "cell {i} above the page number");
        }
        for (j, d) in g.cells.iter().enumerate().skip(i + 1) {
            assert!(!c.frame.overlaps(&d.frame), "cells {i} and {j} overlap");
            assert!(!cap.overlaps(&d.frame), "caption {i} overlaps frame {j}");
            // Reading order: later cells are below, or to the right on the same row.
            assert!(d.frame.y > c.frame.y + EPS || (d.frame.y - c.frame.y).abs() < EPS && d.frame.x > c.frame.x);
        }
    }
    g
}

#[test]
fn a4_portrait_two_by_three() {
    let s = LayoutSettings { frame_aspect: None, ..Default::default() };
    let g = check_cells(&s);
    assert!((g.size.0 - 595.276).abs() < 0.01 && (g.size.1 - 841.89).abs() < 0.01);
    assert_eq!(g.cells.len(), 6);
    let (m, gut) = (12.0 * PT_PER_MM, 6.0 * PT_PER_MM);
    let cell_w = (595.2756 - 2.0 * m - gut) / 2.0;
    for c in &g.cells {
        assert!((c.frame.w - cell_w).abs() < 0.01, "width {} vs {cell_w}", c.frame.w);
    }
    assert!((g.cells[0].frame.x - m).abs() < EPS);
    assert!((g.cells[1].frame.x - (m + cell_w + gut)).abs() < 0.01);
    // Rows are one cell height + one gutter apart.
    let row = g.cells[2].frame.y - g.cells[0].frame.y;
    let cell_h = g.cells[0].caption.unwrap().bottom() - g.cells[0].frame.y;
    assert!((row - cell_h - gut).abs() < 0.01, "row pitch {row}, cell height {cell_h}");
    assert_eq!(g.page_count(4), 1);
    assert_eq!(g.page_count(13), 3);
}

#[test]
fn letter_landscape_three_by_two_square_frames() {
    let s = LayoutSettings {
        page: PageSize::Letter,
        orientation: Orientation::Landscape,
        arrangement: Arrangement::Grid { columns: 3, rows: 2 },
        frame_aspect: Some(1.0),
        ..Default::default()
    };
    let g = check_cells(&s);
    assert_eq!(g.size, (792.0, 612.0));
    assert_eq!(g.cells.len(), 6);
    for c in &g.cells {
        assert!((c.frame.w - c.frame.h).abs() < 0.01, "square frames: {:?}", c.frame);
    }
    // Each row shares its top edge.
    assert!((g.cells[0].frame.y - g.cells[2].frame.y).abs() < EPS);
    assert!(g.cells[3].frame.y > g.cells[0].frame.bottom());
}

#[test]
fn custom_page_and_comic_strip() {
    let custom = LayoutSettings {
        page: PageSize::Custom { width_mm: 100.0, height_mm: 150.0 },
        arrangement: Arrangement::Grid { columns: 1, rows: 1 },
        frame_aspect: Some(16.0 / 9.0),
        title: false,
        page_numbers: false,
        margin_mm: 10.0,
        ..Default::default()
    };
    let g = check_cells(&custom);
    assert!((g.size.0 - 100.0 * PT_PER_MM).abs() < 0.01 && (g.size.1 - 150.0 * PT_PER_MM).abs() < 0.01);
    let f = g.cells[0].frame;
    assert!((f.w - 80.0 * PT_PER_MM).abs() < 0.01, "full content width");
    assert!((f.w / f.h - 16.0 / 9.0).abs() < 1e-3);
    assert!(g.title.is_none() && g.footer.is_none());

    let strip = LayoutSettings {
        orientation: Orientation::Landscape,
        arrangement: Arrangement::Strip { panels: 4 },
        frame_aspect: Some(1.0),
        ..Default::default()
    };
    let g = check_cells(&strip);
    assert_eq!(g.cells.len(), 4);
    let y = g.cells[0].frame.y;
    assert!(g.cells.iter().all(|c| (c.frame.y - y).abs() < EPS), "one row");
    // The row sits in the middle of the space between title and page number.
    let top_space = y - g.title.unwrap().bottom();
    let bottom_space = g.footer.unwrap().y - g.cells[0].caption.unwrap().bottom();
    assert!((top_space - bottom_space).abs() < 20.0, "{top_space} vs {bottom_space}");
}

#[test]
fn impossible_layouts_are_named_errors() {
    let too_big_margins = LayoutSettings { margin_mm: 100.0, ..Default::default() };
    assert_eq!(page_geometry(&too_big_margins), Err(LayoutError::NoRoom));
    let no_columns = LayoutSettings { arrangement: Arrangement::Grid { columns: 0, rows: 2 }, ..Default::default() };
    assert_eq!(page_geometry(&no_columns), Err(LayoutError::Grid));
    let tiny = LayoutSettings { page: PageSize::Custom { width_mm: 10.0, height_mm: 10.0 }, ..Default::default() };
    assert!(matches!(page_geometry(&tiny), Err(LayoutError::PageSize(..))));
    let nan = LayoutSettings { gutter_mm: f32::NAN, ..Default::default() };
    assert!(matches!(page_geometry(&nan), Err(LayoutError::Invalid(_))));
}

#[test]
fn fit_and_fill_place_the_image() {
    let frame = Rect::new(10.0, 10.0, 200.0, 100.0);
    let fit = storymaker::export::layout::image_rect(&frame, (400, 400), AspectMode::Fit);
    assert_eq!(fit, Rect::new(60.0, 10.0, 100.0, 100.0));
    let fill = storymaker::export::layout::image_rect(&frame, (400, 400), AspectMode::Fill);
    assert_eq!(fill, Rect::new(10.0, -40.0, 200.0, 200.0));
}

#[test]
fn long_captions_wrap_and_are_cut_to_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut project = sample_with_images(dir.path());
    project.panels[0].caption = "Launch day at the cape, and the whole crew is there to see it.".into();
    project.panels[1].caption = "word ".repeat(200);
    let settings = ExportSettings::default();
    let pages = build_pages(&project, dir.path(), &settings).unwrap();
    let g = page_geometry(&settings.layout).unwrap();
    let p1 = &pages[0].panels[0];
    assert_eq!(p1.caption_lines.len(), 2, "{:?}", p1.caption_lines);
    assert_eq!(p1.caption_lines.join(" "), project.panels[0].caption);
    let p2 = &pages[0].panels[1];
    assert_eq!(p2.caption_lines.len(), settings.layout.caption_lines as usize);
    assert!(p2.caption_lines.last().unwrap().ends_with(ELLIPSIS));
    // Every line fits the caption area (less the panel number in front of it).
    let area = g.cells[1].caption.unwrap();
    for l in p1.caption_lines.iter().chain(&p2.caption_lines) {
        assert!(measure(l, settings.layout.caption_size_pt).unwrap() <= area.w, "{l}");
    }
}

#[test]
fn bubbles_stay_inside_their_panels() {
    let frames = [
        Rect::new(30.0, 40.0, 250.0, 250.0),
        Rect::new(0.0, 0.0, 90.0, 60.0),
        Rect::new(100.0, 500.0, 400.0, 80.0),
        Rect::new(5.0, 5.0, 40.0, 300.0),
    ];
    let long = "This is a very long line of dialogue that goes on and on about the launch. ".repeat(8);
    let dialogues = [
        "Hi!",
        "Eileen: Right on schedule.",
        "Lav: Smile!\nEileen: No.",
        long.as_str(),
        "Supercalifragilisticexpialidocious!",
    ];
    let values = [-1.0, 0.0, 0.5, 0.95, 3.0, f32::NAN, f32::INFINITY];
    let mut checked = 0;
    for frame in &frames {
        for d in &dialogues {
            for &a in &values {
                for &b in &values {
                    let placement = BubblePlacement { center: [a, b], tail: [b, a], width: a * 2.0 };
                    for p in [Some(placement), None] {
                        let Some(bubble) = layout_bubble(frame, d, p.as_ref(), 9.0).unwrap() else { continue };
                        let bounds = bubble.bounds();
                        assert!(frame.contains_rect(&bounds, EPS), "{bounds:?} leaves {frame:?} ({p:?}, {d:?})");
                        assert!(!bubble.lines.is_empty());
                        for l in &bubble.lines {
                            assert!(l.width(bubble.font_size) <= bubble.rx * 2.0 + EPS, "text wider than its bubble");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} bubbles were laid out");
    // The long dialogue in the big frame is shrunk and kept whole, in the small one it is cut.
    let big = layout_bubble(&frames[0], &long, None, 9.0).unwrap().unwrap();
    assert!(big.font_size < 9.0);
    let small = layout_bubble(&frames[1], &long, None, 9.0).unwrap().unwrap();
    assert!(small.truncated && small.lines.last().unwrap().text.ends_with(ELLIPSIS));

    // The same holds for the bubbles on exported pages.
    let dir = tempfile::tempdir().unwrap();
    let mut project = sample_with_images(dir.path());
    project.panels[0].bubble = Some(BubblePlacement { center: [1.0, 1.0], tail: [0.0, 0.0], width: 1.0 });
    project.panels[2].dialogue = long.clone();
    let pages = build_pages(&project, dir.path(), &ExportSettings::default()).unwrap();
    let with_bubbles: Vec<_> = pages[0].panels.iter().filter(|p| p.bubble.is_some()).collect();
    assert_eq!(with_bubbles.len(), 2, "panels 1 and 3 have dialogue");
    for p in with_bubbles {
        assert!(p.frame.contains_rect(&p.bubble.unwrap(), EPS), "panel {}", p.number);
    }
}

#[test]
fn bubble_placement_is_saved_only_when_set() {
    let mut panel = storymaker::story::Project::new("t").make_panel();
    let plain = serde_json::to_string(&panel).unwrap();
    assert!(!plain.contains("bubble"), "automatic placement adds nothing to project files: {plain}");
    panel.bubble = Some(BubblePlacement { center: [0.7, 0.25], tail: [0.2, 0.9], width: 0.5 });
    let json = serde_json::to_string(&panel).unwrap();
    let back: storymaker::story::Panel = serde_json::from_str(&json).unwrap();
    assert_eq!(back, panel);
    let old: storymaker::story::Panel = serde_json::from_str(&plain).unwrap();
    assert_eq!(old.bubble, None, "files without the field still load");
}

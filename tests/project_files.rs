//! Project files on disk: round trips, bad input that must be refused without touching disk,
//! and saves interrupted at the worst moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use storymaker::story::persist::{atomic_write_with, save_project_with, PROJECT_FILE};
use storymaker::story::sample::write_sample_story;
use storymaker::story::{load_project, ProjectError, FORMAT_VERSION};

/// Every file under `root` with its bytes: "nothing on disk changed" means equal snapshots.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                out.insert(p.clone(), std::fs::read_link(&p).unwrap().to_string_lossy().as_bytes().to_vec());
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn sample_in(dir: &Path) -> PathBuf {
    let root = dir.join("story");
    write_sample_story(&root).unwrap();
    root
}

fn edit_json(root: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join(PROJECT_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Loads a project that must fail, and checks the folder is byte-identical afterwards.
fn load_fails(root: &Path) -> ProjectError {
    let before = snapshot(root);
    let err = load_project(root).expect_err("the project must be refused");
    assert_eq!(snapshot(root), before, "loading changed files on disk");
    err
}

#[test]
fn malformed_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    std::fs::write(root.join(PROJECT_FILE), b"{\"format_version\": 1, \"title\": [").unwrap();
    let err = load_fails(&root);
    assert!(matches!(err, ProjectError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("is not a valid project file"), "{err}");
}

#[test]
fn wrong_types_and_missing_version_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    edit_json(&root, |v| v["panels"][0]["params"]["steps"] = serde_json::json!("many"));
    let err = load_fails(&root);
    assert!(err.to_string().contains("invalid type"), "{err}");
    edit_json(&root, |v| {
        v.as_object_mut().unwrap().remove("format_version");
    });
    assert!(load_fails(&root).to_string().contains("no format_version"));
}

#[test]
fn a_newer_format_version_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    edit_json(&root, |v| v["format_version"] = serde_json::json!(FORMAT_VERSION + 1));
    let err = load_fails(&root);
    match err {
        ProjectError::NewerVersion { found, supported, .. } => {
            assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("expected NewerVersion, got {other}"),
    }
}

#[test]
fn a_missing_asset_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    std::fs::remove_file(root.join("assets/photos/camera.png")).unwrap();
    let err = load_fails(&root);
    assert!(err.to_string().contains("assets/photos/camera.png"), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn asset_paths_outside_the_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    std::fs::write(dir.path().join("secret.png"), b"not yours").unwrap();
    for bad in ["../secret.png", "/etc/passwd", "assets/../../secret.png", "C:/Windows/win.ini"] {
        edit_json(&root, |v| v["characters"][0]["photo"] = serde_json::json!(bad));
        let err = load_fails(&root);
        assert!(matches!(err, ProjectError::Malformed { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("project folder"), "{bad}: {err}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_escaping_the_folder_is_refused_for_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.png"), b"precious").unwrap();
    // The mask file becomes a link to a file elsewhere: loading must refuse it...
    let mask = root.join("assets/masks/eileen-mask.png");
    std::fs::remove_file(&mask).unwrap();
    std::os::unix::fs::symlink(outside.join("victim.png"), &mask).unwrap();
    let err = load_fails(&root);
    assert!(err.to_string().contains("leaves the project folder"), "{err}");
    // ...and saving a project through that link must not overwrite the target.
    let project = storymaker::story::sample::sample_project();
    let err = storymaker::story::save_project(&root, &project).expect_err("must refuse");
    assert!(err.to_string().contains("leaves the project folder"), "{err}");
    assert_eq!(std::fs::read(outside.join("victim.png")).unwrap(), b"precious");
}

#[test]
fn a_mask_of_the_wrong_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    image::GrayImage::new(10, 10).save(root.join("assets/masks/lav-mask.png")).unwrap();
    let err = load_fails(&root);
    assert!(err.to_string().contains("mask is 10x10, photo is 512x512"), "{err}");
}

#[test]
fn a_save_killed_before_the_rename_leaves_the_old_project_intact() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    let old = load_project(&root).unwrap();
    let old_json = std::fs::read(root.join(PROJECT_FILE)).unwrap();
    let mut changed = old.clone();
    changed.title = "A different story".into();
    changed.panels.truncate(1);
    let err = save_project_with(&root, &changed, || Err(std::io::Error::other("power cut")));
    assert!(err.is_err());
    assert_eq!(std::fs::read(root.join(PROJECT_FILE)).unwrap(), old_json);
    assert_eq!(load_project(&root).unwrap(), old);
    // No temp files are left behind by a failed save.
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_crash_mid_write_leaves_only_a_temp_file_that_loading_ignores() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    let old = load_project(&root).unwrap();
    // Simulate the process dying after a partial temp write: a stray temp file next to project.json.
    std::fs::write(root.join(".project.json.tmp-999-0"), b"{\"format_version\": 1, \"tit").unwrap();
    assert_eq!(load_project(&root).unwrap(), old);
    // And a normal atomic write replaces the whole file or nothing.
    let target = dir.path().join("x.json");
    std::fs::write(&target, b"old").unwrap();
    atomic_write_with(&target, b"new contents", || Ok(())).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
}

#[test]
fn save_and_load_round_trip_including_masks() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_in(dir.path());
    let mut p = load_project(&root).unwrap();
    let mask = std::sync::Arc::make_mut(&mut p.characters[1].mask);
    mask.stroke([10.0, 10.0], [100.0, 40.0], 6.0, 0);
    p.panels.swap(0, 3);
    p.panels[1].caption = "Ünïcödé ✓ caption".into();
    storymaker::story::save_project(&root, &p).unwrap();
    assert_eq!(load_project(&root).unwrap(), p);
}

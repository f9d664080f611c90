//! Upgrading older `project.json` files.
//!
//! Each step takes the JSON of version `n` to `n + 1`, so files written by any earlier release
//! open in this one. Version 1 is the first published format, so the table is still empty; a
//! format change bumps [`FORMAT_VERSION`] and appends its step here (the test below fails until
//! it does).

use serde_json::Value;

use super::project::FORMAT_VERSION;

/// `STEPS[i]` upgrades version `FIRST_VERSION + i` to the next one.
type Step = fn(Value) -> Result<Value, String>;
const FIRST_VERSION: u32 = 1;
const STEPS: &[Step] = &[];

/// Upgrades `doc` from `from` to [`FORMAT_VERSION`]. The caller has already refused newer files.
pub fn upgrade(mut doc: Value, from: u32) -> Result<Value, String> {
    if from < FIRST_VERSION {
        return Err(format!(
            "format version {from} predates this application (the oldest readable version is {FIRST_VERSION})"
        ));
    }
    for v in from..FORMAT_VERSION {
        let step =
            STEPS.get((v - FIRST_VERSION) as usize).ok_or_else(|| format!("no upgrade from format version {v}"))?;
        doc = step(doc).map_err(|e| format!("upgrading from format version {v}: {e}"))?;
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("format_version".into(), Value::from(v + 1));
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_older_version_has_a_step() {
        assert_eq!(STEPS.len() as u32, FORMAT_VERSION - FIRST_VERSION);
        for v in FIRST_VERSION..=FORMAT_VERSION {
            let doc = serde_json::json!({"format_version": v});
            let up = upgrade(doc, v).expect("upgrade");
            assert_eq!(up["format_version"], FORMAT_VERSION);
        }
        assert!(upgrade(serde_json::json!({}), 0).is_err());
    }
}

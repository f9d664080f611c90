//! A tiny `--flag value` parser: the subcommands have few options and no dependency is worth it.

use std::collections::HashMap;

pub struct Args {
    pub positional: Vec<String>,
    flags: HashMap<String, String>,
}

impl Args {
    /// Parses `--name value` pairs and positional words; `--help` becomes the flag `help`.
    pub fn parse(words: &[String]) -> anyhow::Result<Args> {
        let mut positional = Vec::new();
        let mut flags = HashMap::new();
        let mut it = words.iter();
        while let Some(w) = it.next() {
            if let Some(name) = w.strip_prefix("--") {
                if name == "help" {
                    flags.insert("help".into(), String::new());
                    continue;
                }
                let (name, value) = match name.split_once('=') {
                    Some((n, v)) => (n.to_string(), v.to_string()),
                    None => {
                        let v = it.next().ok_or_else(|| anyhow::anyhow!("--{name} needs a value"))?;
                        (name.to_string(), v.clone())
                    }
                };
                flags.insert(name, value);
            } else {
                positional.push(w.clone());
            }
        }
        Ok(Args { positional, flags })
    }

    pub fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("--{name} {v}: {e}")),
            None => Ok(default),
        }
    }

    pub fn require(&self, name: &str) -> anyhow::Result<&str> {
        self.get(name).ok_or_else(|| anyhow::anyhow!("missing --{name}"))
    }
}

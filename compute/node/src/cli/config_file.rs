//! The `--config` TOML file: its values become the flags' defaults, so a flag or an
//! environment variable still wins over it, and `--help` shows the values in force.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches};

use super::Cli;

/// Parses the command line, with the config file's values as defaults.
pub fn parse() -> anyhow::Result<Cli> {
    parse_from(std::env::args_os().collect())
}

fn parse_from(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    if let Some(path) = config_path(&args) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .with_context(|| format!("config file {}", path.display()))?;
        command = apply(command, &table, &path, None)?;
    }
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `--config X`, `--config=X`, else STAGECAST_CONFIG.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if arg == "--" {
            break;
        }
    }
    std::env::var_os("STAGECAST_CONFIG").map(PathBuf::from)
}

/// Sets each key of `table` as the default of the flag of that name; a table sets the
/// flags of the subcommand of its name.
fn apply(
    mut command: clap::Command,
    table: &toml::Table,
    path: &Path,
    within: Option<&str>,
) -> anyhow::Result<clap::Command> {
    for (key, value) in table {
        let place = match within {
            Some(sub) => format!("[{sub}] {key}"),
            None => key.clone(),
        };
        if let toml::Value::Table(inner) = value {
            if within.is_some() || command.find_subcommand(key).is_none() {
                bail!("{}: unknown section [{key}]", path.display());
            }
            let sub = command.find_subcommand(key).expect("checked").clone();
            let sub = apply(sub, inner, path, Some(key))?;
            command = command.mut_subcommand(key, |_| sub);
            continue;
        }
        let id = key.replace('-', "_");
        let Some(arg) = command.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            bail!("{}: unknown setting {place}", path.display());
        };
        if arg.is_positional() || id == "config" {
            bail!("{}: {place} cannot be set in a config file", path.display());
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => bail!(
                "{}: {place} must be a string, number or boolean",
                path.display()
            ),
        };
        command = command.mut_arg(id, |a| a.default_value(value));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_values_are_defaults_that_flags_override() {
        let file = write(
            "edge = \"http://127.0.0.1:9\"\ntenant = \"acme\"\n[serve]\nconcurrency = 3\nqueue = 7\n",
        );
        let path = file.path().to_str().unwrap();
        let cli = parse_from(args(&["node", "--config", path, "serve", "--queue", "9"])).unwrap();
        assert_eq!(cli.edge.edge.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(cli.edge.tenant, "acme");
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        assert_eq!((serve.concurrency, serve.queue), (3, 9));
    }

    #[test]
    fn unknown_keys_and_sections_are_errors_naming_them() {
        let file = write("edje = \"x\"\n");
        let path = file.path().to_str().unwrap();
        let err = parse_from(args(&["node", "--config", path, "models"])).unwrap_err();
        assert!(err.to_string().contains("unknown setting edje"), "{err}");

        let file = write("[serv]\nqueue = 1\n");
        let path = file.path().to_str().unwrap();
        let err = parse_from(args(&["node", &format!("--config={path}"), "models"])).unwrap_err();
        assert!(err.to_string().contains("unknown section [serv]"), "{err}");
    }
}

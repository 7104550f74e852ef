//! `writ policy new`: a complete policy project of its own (outside any Writ workspace) in Rust,
//! Python or TypeScript, with one rule, native tests and a cases file, built against a Writ
//! checkout's SDKs and WIT (the SDKs are not published to a registry).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The language of a new policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with `writ-policy` (a `wasm32-wasip2` component).
    Rust,
    /// Python, with `writ_policy` and componentize-py.
    Python,
    /// TypeScript, with `@writ/policy` and componentize-js.
    Typescript,
}

const CASES: &str = include_str!("../templates/cases.json");

/// (path in the project, template) for each language.
fn files(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            (
                ".cargo/config.toml",
                include_str!("../templates/rust/.cargo/config.toml"),
            ),
            ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
            (".gitignore", include_str!("../templates/rust/gitignore")),
        ],
        Lang::Python => &[
            ("app.py", include_str!("../templates/python/app.py")),
            (
                "test_app.py",
                include_str!("../templates/python/test_app.py"),
            ),
            (".gitignore", include_str!("../templates/python/gitignore")),
        ],
        Lang::Typescript => &[
            (
                "package.json",
                include_str!("../templates/typescript/package.json"),
            ),
            (
                "tsconfig.json",
                include_str!("../templates/typescript/tsconfig.json"),
            ),
            (
                "src/policy.ts",
                include_str!("../templates/typescript/src/policy.ts"),
            ),
            (
                "test/policy.test.ts",
                include_str!("../templates/typescript/test/policy.test.ts"),
            ),
            (
                ".gitignore",
                include_str!("../templates/typescript/gitignore"),
            ),
        ],
    }
}

/// The Writ checkout this binary was built from, if it is still there.
pub fn default_checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes the project `name` in `lang` into `dir` (which must not exist, or be empty), using
/// the SDKs and WIT of the Writ `checkout`; returns the commands to test, build and push it.
pub fn create(dir: &Path, name: &str, lang: Lang, checkout: &Path) -> anyhow::Result<String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("policy name {name:?}: 1 to 64 of a-z, 0-9 and -, starting with a letter");
    }
    let checkout = checkout.canonicalize().with_context(|| {
        format!(
            "no Writ checkout at {}: pass --writ-checkout DIR",
            checkout.display()
        )
    })?;
    for needed in [
        "wit/policy.wit",
        "policy-sdk/Cargo.toml",
        "policy-sdk-python/writ_policy",
    ] {
        if !checkout.join(needed).exists() {
            bail!(
                "{} is not a Writ checkout (no {needed}): pass --writ-checkout DIR",
                checkout.display()
            );
        }
    }
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = |sub: &str| checkout.join(sub).display().to_string();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{rust_sdk}}", &sdk("policy-sdk"))
            .replace("{{ts_sdk}}", &sdk("policy-sdk-typescript"))
    };
    let mut all: Vec<(&str, String)> = files(lang).iter().map(|(p, t)| (*p, fill(t))).collect();
    all.push(("cases.json", CASES.to_owned()));
    if lang == Lang::Python {
        let wit = std::fs::read_to_string(checkout.join("wit/policy.wit"))?;
        all.push(("wit/policy.wit", wit));
    }
    for (path, text) in &all {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap())
            .with_context(|| format!("creating {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let cd = format!("cd {}", dir.display());
    let wasm = match lang {
        Lang::Rust => format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        _ => format!("{name}.wasm"),
    };
    let steps = match lang {
        Lang::Rust => "rustup target add wasm32-wasip2\n\
             cargo test                                           # native unit tests\n\
             cargo build --release --target wasm32-wasip2         # the component"
            .to_owned(),
        Lang::Python => format!(
            "python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1 pytest\n\
             PYTHONPATH={py} .venv/bin/python -m pytest            # native unit tests\n\
             .venv/bin/componentize-py -d wit -w policy componentize app -p . -p {py} -o {wasm}",
            py = sdk("policy-sdk-python"),
        ),
        Lang::Typescript => "npm install\n\
             npm test                                             # native unit tests\n\
             npm run build                                        # the component"
            .to_owned(),
    };
    Ok(format!(
        "created {lang:?} policy `{name}` in {dir}\n\n{cd}\n{steps}\n\
         writ policy test {wasm} cases.json                   # the cases, in the sandbox\n\
         writ policy push {wasm} --name {name} --activate --gateway http://127.0.0.1:4587 --key \"$ADMIN_KEY\"\n",
        dir = dir.display(),
    ))
}

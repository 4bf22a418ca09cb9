//! The Rust project of `sluice plugin new`: the plugin crate, and a copy of
//! the SDK (`plugins/sdk`, bindings and WIT included) under
//! `vendor/sluice-plugin/`, so the project builds offline and outside this
//! repository.

use super::scaffold::File;

/// Every file of the SDK crate, by its path inside the crate.
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../plugins/sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../../plugins/sdk/src/lib.rs")),
    ("src/types.rs", include_str!("../../../plugins/sdk/src/types.rs")),
    ("src/testing.rs", include_str!("../../../plugins/sdk/src/testing.rs")),
    ("src/__private.rs", include_str!("../../../plugins/sdk/src/__private.rs")),
    ("wit/plugin.wit", include_str!("../../../plugins/sdk/wit/plugin.wit")),
    ("bindings/router/Cargo.toml", include_str!("../../../plugins/sdk/bindings/router/Cargo.toml")),
    ("bindings/router/src/lib.rs", include_str!("../../../plugins/sdk/bindings/router/src/lib.rs")),
    ("bindings/sniffer/Cargo.toml", include_str!("../../../plugins/sdk/bindings/sniffer/Cargo.toml")),
    ("bindings/sniffer/src/lib.rs", include_str!("../../../plugins/sdk/bindings/sniffer/src/lib.rs")),
];

/// The Rust-specific files; `render` fills the templates' `{{key}}`s.
pub(super) fn files(render: &dyn Fn(&str) -> String, sniffer: bool) -> Vec<File> {
    let file = |path: &str, template: &str| File { path: path.into(), text: render(template), executable: false };
    let mut files = vec![
        file("Cargo.toml", include_str!("../../templates/rust/Cargo.toml")),
        File { path: "build.sh".into(), text: render(include_str!("../../templates/rust/build.sh")), executable: true },
        file(
            "src/lib.rs",
            if sniffer {
                include_str!("../../templates/rust/sniffer.rs")
            } else {
                include_str!("../../templates/rust/router.rs")
            },
        ),
        file(".gitignore", include_str!("../../templates/rust/gitignore")),
    ];
    for (path, text) in SDK {
        files.push(File { path: format!("vendor/sluice-plugin/{path}"), text: text.to_string(), executable: false });
    }
    files
}

//! What a component says about itself, read without compiling it: its imports (checked against
//! the allowlist before a compile that takes 13–19 s for a Python or JavaScript component), the
//! toolchain that built it (its `producers` sections, for a build hint in that language) and how
//! many core instances, memories and tables it holds (checked against the instance pool).

use wasmparser::{ComponentTypeRef, Instance, KnownCustom, Parser, Payload};

/// A component's outline, from one pass of `wasmparser` over its bytes (no validation: that is
/// the compiler's job, and it runs next).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outline {
    /// The component's own imports, full names (`wasi:sockets/tcp@0.2.0`), type imports left
    /// out: the named types wit-component imports for the world's exports need nothing from
    /// the host.
    pub(crate) imports: Vec<String>,
    /// Every `(field, name)` of every `producers` section, at any depth:
    /// `("processed-by", "componentize-py")`, `("language", "Rust")`.
    pub(crate) producers: Vec<(String, String)>,
    /// Core module instantiations, at any depth.
    pub(crate) core_instances: u32,
    /// Linear memories the component's core modules define (not import).
    pub(crate) memories: u32,
    /// Tables the component's core modules define (not import).
    pub(crate) tables: u32,
}

/// The outline of `wasm`, or the parser's reason it cannot be read.
pub(crate) fn outline(wasm: &[u8]) -> Result<Outline, wasmparser::BinaryReaderError> {
    let mut out = Outline::default();
    // Nested modules and components end with an `End` of their own; imports of a nested
    // component are satisfied inside the outer one, so only depth 0 counts.
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import?;
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        out.imports.push(import.name.name.to_owned());
                    }
                }
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if matches!(instance?, Instance::Instantiate { .. }) {
                        out.core_instances = out.core_instances.saturating_add(1);
                    }
                }
            }
            Payload::MemorySection(reader) => {
                out.memories = out.memories.saturating_add(reader.count());
            }
            Payload::TableSection(reader) => {
                out.tables = out.tables.saturating_add(reader.count());
            }
            Payload::CustomSection(section) => {
                if let KnownCustom::Producers(reader) = section.as_known() {
                    for field in reader {
                        let field = field?;
                        for value in field.values {
                            out.producers
                                .push((field.name.to_owned(), value?.name.to_owned()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The source language of a component, as far as its producers sections tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Language {
    Rust,
    Python,
    JavaScript,
    /// No producers section, or one naming another toolchain.
    Unknown,
}

impl Outline {
    /// The language the component was written in. The componentizing tool decides (a Python
    /// component embeds CPython, written in C and built with Rust tooling, so `language` fields
    /// alone would mislead); then the `language` field.
    pub(crate) fn language(&self) -> Language {
        let has = |field: &str, pred: &dyn Fn(&str) -> bool| {
            self.producers
                .iter()
                .any(|(f, name)| f == field && pred(&name.to_ascii_lowercase()))
        };
        let tool = |name: &str| name.contains("componentize-py");
        if has("processed-by", &tool) || has("language", &|n| n == "python") {
            return Language::Python;
        }
        let js = |name: &str| {
            name.contains("componentizejs")
                || name.contains("componentize-js")
                || name == "jco"
                || name.contains("starlingmonkey")
        };
        if has("processed-by", &js) || has("language", &|n| n == "javascript") {
            return Language::JavaScript;
        }
        if has("language", &|n| n == "rust") {
            return Language::Rust;
        }
        Language::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_producers(fields: &[(&str, &str)]) -> Outline {
        Outline {
            producers: fields
                .iter()
                .map(|(f, n)| ((*f).to_owned(), (*n).to_owned()))
                .collect(),
            ..Outline::default()
        }
    }

    #[test]
    fn the_componentizing_tool_names_the_language() {
        let python = with_producers(&[
            ("language", "C11"),
            ("language", "Rust"),
            ("processed-by", "componentize-py"),
        ]);
        assert_eq!(python.language(), Language::Python);
        let js = with_producers(&[("language", "Rust"), ("processed-by", "ComponentizeJS")]);
        assert_eq!(js.language(), Language::JavaScript);
        assert_eq!(
            with_producers(&[("language", "JavaScript")]).language(),
            Language::JavaScript
        );
        assert_eq!(
            with_producers(&[("language", "Rust"), ("processed-by", "wit-component")]).language(),
            Language::Rust
        );
        assert_eq!(with_producers(&[]).language(), Language::Unknown);
    }
}

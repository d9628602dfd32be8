//! What `delete` reads of a document: `kind`, `apiVersion`,
//! `metadata.name` and `metadata.namespace`, read as the document streams
//! past; the rest is walked but not built. Building each document whole
//! (a `serde_yaml_ng::Value`, to look four fields up in it) was half of what
//! a `delete` of 10 000 services cost the agent.
//!
//! The document reads as a `Value` would: a tagged node as its content
//! (`Value::get` and `as_str` look through tags), a field that is not a
//! string as absent, and a key given twice in any mapping refused with
//! the `Value`'s own message.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value as Yaml;
use traffic_shift_config::DuplicateKey;

/// One document of a `delete`, as far as it names a resource.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum Named {
    /// An empty document (or a null one): skipped.
    #[default]
    Empty,
    /// Its fields, each `None` when absent or not a string.
    Fields {
        kind: Option<String>,
        api_version: Option<String>,
        name: Option<String>,
        namespace: Option<String>,
    },
}

impl Named {
    /// A document that is not null but names nothing (a list, a scalar).
    fn nothing() -> Self {
        Self::Fields {
            kind: None,
            api_version: None,
            name: None,
            namespace: None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Named {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Document)
    }
}

/// The top of a document.
struct Document;

impl<'de> Visitor<'de> for Document {
    type Value = Named;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Named, E> {
        Ok(Named::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Named, E> {
        Ok(Named::Empty)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Named, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Named, E> {
        Ok(Named::nothing())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Named, E> {
        Ok(Named::nothing())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Named, E> {
        Ok(Named::nothing())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Named, E> {
        Ok(Named::nothing())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Named, E> {
        Ok(Named::nothing())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Named, A::Error> {
        Checked.visit_seq(seq)?;
        Ok(Named::nothing())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named, A::Error> {
        let (mut kind, mut api_version, mut name, mut namespace) = (None, None, None, None);
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(&mut keys)? {
            match key.as_deref() {
                Some("kind") => kind = map.next_value_seed(Text)?,
                Some("apiVersion") => api_version = map.next_value_seed(Text)?,
                Some("metadata") => (name, namespace) = map.next_value_seed(Metadata)?,
                _ => map.next_value_seed(Checked)?,
            }
        }
        Ok(Named::Fields {
            kind,
            api_version,
            name,
            namespace,
        })
    }

    /// A tagged node: read through the tag, as `Value::get` does.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Named, A::Error> {
        use de::VariantAccess as _;
        let (IgnoredAny, content) = data.variant()?;
        Ok(match content.newtype_variant_seed(DocumentSeed)? {
            // `!tag ~` is a tagged value, not an empty document.
            Named::Empty => Named::nothing(),
            named @ Named::Fields { .. } => named,
        })
    }
}

struct DocumentSeed;

impl<'de> DeserializeSeed<'de> for DocumentSeed {
    type Value = Named;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Named, D::Error> {
        deserializer.deserialize_any(Document)
    }
}

/// `metadata`: its `name` and `namespace`.
struct Metadata;

impl<'de> DeserializeSeed<'de> for Metadata {
    type Value = (Option<String>, Option<String>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Metadata {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut namespace) = (None, None);
        let mut keys = Keys::default();
        while let Some(key) = map.next_key_seed(&mut keys)? {
            match key.as_deref() {
                Some("name") => name = map.next_value_seed(Text)?,
                Some("namespace") => namespace = map.next_value_seed(Text)?,
                _ => map.next_value_seed(Checked)?,
            }
        }
        Ok((name, namespace))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        use de::VariantAccess as _;
        let (IgnoredAny, content) = data.variant()?;
        content.newtype_variant_seed(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked.visit_seq(seq)?;
        Ok((None, None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok((None, None))
    }
}

/// A field's value: the string, or `None` for anything else (walked).
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(text))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        use de::VariantAccess as _;
        let (IgnoredAny, content) = data.variant()?;
        content.newtype_variant_seed(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked.visit_seq(seq)?;
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Checked.visit_map(map)?;
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A value walked, not kept: only its mappings' keys, to refuse one given
/// twice as a `Value` does (and, as a `Value`, an integer past 64 bits).
#[derive(Clone, Copy)]
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while map.next_key_seed(&mut keys)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess as _;
        let (IgnoredAny, content) = data.variant()?;
        content.newtype_variant_seed(self)
    }
}

/// The keys of one mapping so far. Each next key is read as a `Value` (as
/// a `Mapping` keys it) and refused if given before; returned as the
/// string it is, if it is one.
#[derive(Default)]
struct Keys(Vec<Yaml>);

impl<'de> DeserializeSeed<'de> for &mut Keys {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        use serde::Deserialize as _;
        let key = Yaml::deserialize(deserializer)?;
        if self.0.contains(&key) {
            return Err(de::Error::custom(DuplicateKey(&key)));
        }
        let text = match &key {
            Yaml::String(text) => Some(text.clone()),
            _ => None,
        };
        self.0.push(key);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::{Named, Yaml};

    /// Each document of `text` as `Named` reads it and as a `Value` does:
    /// the same fields, or the same error.
    fn same_as_value(text: &str) {
        let named = serde_yaml_ng::Deserializer::from_str(text).map(Named::deserialize);
        let values = serde_yaml_ng::Deserializer::from_str(text).map(Yaml::deserialize);
        for (named, value) in named.zip(values) {
            let expected = value.map(|value| {
                // As `delete` read a `Value`: only an untagged null is empty.
                if matches!(value, Yaml::Null) {
                    return Named::Empty;
                }
                let field = |path: &[&str]| {
                    path.iter()
                        .try_fold(&value, |v, key| v.get(*key))
                        .and_then(Yaml::as_str)
                        .map(str::to_owned)
                };
                Named::Fields {
                    kind: field(&["kind"]),
                    api_version: field(&["apiVersion"]),
                    name: field(&["metadata", "name"]),
                    namespace: field(&["metadata", "namespace"]),
                }
            });
            match (named, expected) {
                (Ok(named), Ok(expected)) => assert_eq!(named, expected, "{text}"),
                (Err(named), Err(expected)) => {
                    assert_eq!(named.to_string(), expected.to_string(), "{text}");
                }
                (named, expected) => panic!("{text}: {named:?} but a Value: {expected:?}"),
            }
        }
    }

    #[test]
    fn reads_the_names_a_value_would() {
        for text in [
            "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: a, namespace: b}\nspec: {hosts: [a], tcp: [{route: []}]}\n",
            "---\n---\nkind: ServiceEntry\nmetadata:\n  name: x\n",
            "kind: 5\nmetadata: {name: [a], namespace: {b: c}}\n",
            "kind: !!str VirtualService\nmetadata: !meta {name: !n a}\n",
            "!doc {kind: Gateway, metadata: {name: g}}\n",
            "!doc ~\n",
            "- kind: Gateway\n",
            "just text\n",
            "~\n",
            "kind: Gateway\nmetadata: {name: g}\nspec: &s {a: 1}\nstatus: *s\n",
            "? [a, b]\n: 1\nkind: Gateway\nmetadata: ~\n",
            "kind: Gateway\nspec: {port: 99999999999999999999999}\n",
            "kind: Gateway\nmetadata: {name: [a, {b: [[[c]]]}]}\n",
        ] {
            same_as_value(text);
        }
    }

    #[test]
    fn refuses_a_key_given_twice_as_a_value_does() {
        for text in [
            "kind: Gateway\nkind: VirtualService\n",
            "kind: Gateway\nmetadata: {name: a, name: b}\n",
            "kind: Gateway\nspec: {hosts: [a], x: {y: 1, y: 2}}\n",
            "kind: Gateway\nspec: {1: a, 1: b}\n",
            "kind: Gateway\nspec: {true: a, true: b}\n",
            "kind: Gateway\nspec: {~: a, ~: b}\n",
            "kind: Gateway\nspec: {[a]: a, [a]: b}\n",
        ] {
            same_as_value(text);
            assert!(
                serde_yaml_ng::Deserializer::from_str(text)
                    .map(Named::deserialize)
                    .any(|named| named.is_err()),
                "{text}"
            );
        }
    }
}

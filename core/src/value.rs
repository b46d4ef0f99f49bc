//! What the value types with rules share, written once: their text form is what `Display`
//! writes, and text comes in only through `FromStr`, so deserializing checks the same rules as
//! parsing a flag or a request does.

/// `Serialize` as the `Display` text and `Deserialize` through `FromStr`. The optional format
/// string (one `{}` for the parse error) puts the error in context, e.g. `"hardware serial {}"`.
macro_rules! serde_as_text {
    ($t:ty) => {
        serde_as_text!($t, "{}");
    };
    ($t:ty, $context:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse::<$t>()
                    .map_err(|e| serde::de::Error::custom(format_args!($context, e)))
            }
        }
    };
}

/// For a checked text kept as it was given (`struct T(String)` with
/// `T::parse(&str) -> Result<T, E>`): `as_str`, `into_string`, `FromStr`, `Display`,
/// `AsRef<str>` and [`serde_as_text`].
macro_rules! text_value {
    ($t:ident, $err:ty $(, $context:literal)?) => {
        impl $t {
            /// The text as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::str::FromStr for $t {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        serde_as_text!($t $(, $context)?);
    };
}

/// Why a text is not one of an enum's names. The `Display` text is serde's for an unknown
/// variant, so a request body with a bad name reads the same as before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant `{given}`, expected one of {}", expected_list(.expected))]
pub struct UnknownName {
    pub given: String,
    pub expected: &'static [&'static str],
}

fn expected_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An enum of names written once: each variant with its wire name. Gives the enum, `ALL`,
/// `NAMES`, `as_str`, `parse` (None for an unknown name), `FromStr` ([`UnknownName`]),
/// `Display`, serde through them, and (feature `openapi`) a string schema listing the names.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $t:ident {
            $( $(#[$vmeta:meta])* $v:ident = $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $t {
            $( $(#[$vmeta])* $v, )+
        }

        impl $t {
            pub const NAMES: &'static [&'static str] = &[$($name),+];
            pub const ALL: [$t; Self::NAMES.len()] = [$($t::$v),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $name,)+
                }
            }

            /// The variant named `s`, if any.
            pub fn parse(s: &str) -> Option<$t> {
                match s {
                    $($name => Some($t::$v),)+
                    _ => None,
                }
            }
        }

        impl std::str::FromStr for $t {
            type Err = $crate::value::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| $crate::value::UnknownName {
                    given: s.to_string(),
                    expected: Self::NAMES,
                })
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        serde_as_text!($t);

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(Self::NAMES.iter().copied()))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $t {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($t))
            }
        }
    };
}

#[cfg(all(test, feature = "api"))]
mod tests {
    use crate::api::{RevocationReason, Role};

    #[test]
    fn a_named_enum_reads_and_writes_each_name_once() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(r.as_str()), Some(r));
            assert_eq!(r.to_string().parse::<RevocationReason>(), Ok(r));
            let json = serde_json::to_string(&r).expect("serializes");
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(
                serde_json::from_str::<RevocationReason>(&json).ok(),
                Some(r)
            );
        }
        assert_eq!(RevocationReason::KeyCompromise.as_str(), "keyCompromise");
        assert_eq!(RevocationReason::NAMES.len(), RevocationReason::ALL.len());
        assert_eq!(Role::parse("Admin"), None);
        let e = "root".parse::<Role>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown variant `root`, expected one of `admin`, `factory`, `broker`, `auditor`, `app`"
        );
        let e = serde_json::from_str::<Role>("\"root\"").expect_err("unknown");
        assert!(e.to_string().starts_with("unknown variant `root`"), "{e}");
    }
}

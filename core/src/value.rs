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

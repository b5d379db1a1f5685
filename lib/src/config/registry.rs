//! The settings registry: the [`settings!`] macro that turns one declaration per setting
//! (doc, name, type, default, readers, bounds, checks) into the [`super::MainConfig`]
//! struct, its `Default`, its per-setting validation and the static list
//! [`super::SETTINGS`] that `postern config --doc` prints.
//!
//! One entry of the macro:
//!
//! ```text
//! /// One-line doc (several `///` lines are joined into one).
//! name: Type = default_expression,
//!     readers "smtpd cleanup"          which programs read it
//!     [, min VALUE] [, max VALUE]       bounds (numbers, sizes, durations)
//!     [, check FUNCTION]                fn(&Type) -> Result<(), String> for other rules
//!     [, path Config | path Root]       a ConfigPath and what a relative one is relative to
//!     [, name "TOML_NAME"]              when the TOML key is not the field name
//!     [, serde(...)];                   extra serde attributes (sizes: deserialize_with)
//! ```
//!
//! Rules between settings (one must be at least another) stay in `MainConfig::relations`.

use super::cidr::Cidr;
use super::duration::Seconds;

/// What the registry knows of one setting.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    /// The key in main.toml.
    pub name: &'static str,
    /// The type in an administrator's words (`duration`, `one of: none, may, encrypt`).
    pub kind: fn() -> String,
    /// The doc, as declared (several lines joined).
    pub doc_text: &'static str,
    /// The programs that read it.
    pub readers: &'static str,
    /// The default in TOML syntax (before `$name` references are expanded).
    pub default: fn() -> String,
    /// The bounds (`at least 1`, `between 512 and 65536`), when it has any.
    pub bounds: Option<fn() -> String>,
}

impl SettingInfo {
    /// The doc on one line.
    pub fn doc(&self) -> String {
        self.doc_text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The entry for `name`.
    pub fn find(name: &str) -> Option<&'static SettingInfo> {
        super::SETTINGS.iter().find(|s| s.name == name)
    }
}

/// The type of a setting as `postern config --doc` names it.
pub trait SettingType {
    /// `number`, `size`, `duration`, `one of: ...`.
    fn kind() -> String;
}

macro_rules! kinds {
    ($($t:ty => $k:literal),* $(,)?) => {
        $(impl SettingType for $t {
            fn kind() -> String {
                $k.into()
            }
        })*
    };
}

kinds! {
    String => "text",
    bool => "true or false",
    u32 => "number",
    u64 => "size (bytes; or with a unit: \"10MB\", \"512k\", \"1g\")",
    Seconds => "duration (seconds; or with a unit: \"30s\", \"5m\", \"2h\", \"5d\", \"1w\")",
    Vec<String> => "list of text",
    Vec<Cidr> => "list of networks (\"10.0.0.0/8\", \"[::1]/128\")",
}

/// A setting with bounds: numbers, sizes and durations.
pub trait Bounded: Copy + PartialOrd {
    /// The value as an administrator writes it.
    fn show(self) -> String;
}

impl Bounded for u32 {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for u64 {
    fn show(self) -> String {
        self.to_string()
    }
}

impl Bounded for Seconds {
    fn show(self) -> String {
        self.to_string()
    }
}

/// `at least MIN`, `at most MAX` or `between MIN and MAX`.
pub fn range_text<T: Bounded>(min: Option<T>, max: Option<T>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("between {} and {}", lo.show(), hi.show()),
        (Some(lo), None) => format!("at least {}", lo.show()),
        (None, Some(hi)) => format!("at most {}", hi.show()),
        (None, None) => String::new(),
    }
}

/// Checks `value` against its bounds; the error names the range and the value.
pub fn check_range<T: Bounded>(value: &T, min: Option<T>, max: Option<T>) -> Result<(), String> {
    let v = *value;
    if min.is_some_and(|lo| v < lo) || max.is_some_and(|hi| v > hi) {
        return Err(format!("must be {} (is {})", range_text(min, max), v.show()));
    }
    Ok(())
}

/// A value in TOML syntax, as `postern config` prints it.
pub fn render<T: serde::Serialize>(value: &T) -> String {
    let mut text = String::new();
    match toml::Value::try_from(value) {
        Ok(v) => {
            let _ = serde::Serialize::serialize(&v, toml::ser::ValueSerializer::new(&mut text));
        }
        Err(e) => text = format!("<{e}>"),
    }
    text
}

/// Declares every setting once; see the module doc.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident : $ty:ty = $default:expr,
        readers $readers:literal
        $(, min $min:expr)?
        $(, max $max:expr)?
        $(, check $check:path)?
        $(, path $base:ident)?
        $(, name $toml:literal)?
        $(, serde($($serde:tt)*))?
        ;
    )*) => {
        /// Every setting of `main.toml`. Unknown keys are an error.
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct MainConfig {
            $(
                $(#[doc = $doc])+
                $(#[serde(rename = $toml)])?
                $(#[serde($($serde)*)])?
                pub $field: $ty,
            )*
        }

        impl Default for MainConfig {
            fn default() -> Self {
                MainConfig {
                    $($field: $default,)*
                }
            }
        }

        impl MainConfig {
            /// Each setting's bounds and checks, in declaration order. Returns (key, reason).
            fn check_each(&self) -> Result<(), (&'static str, String)> {
                $(
                    #[allow(unused_variables)]
                    let key: &'static str = settings!(@name $field $($toml)?);
                    settings!(@range key, &self.$field, [$($min)?], [$($max)?]);
                    $($check(&self.$field).map_err(|r| (key, r))?;)?
                )*
                Ok(())
            }

            /// Makes every relative path setting absolute against its base.
            pub(super) fn resolve_paths(&mut self, config_dir: &std::path::Path) {
                $($(self.$field.resolve($crate::config::paths::Base::$base, config_dir);)?)*
            }
        }

        /// Every setting: name, type, doc, readers, default and bounds.
        pub static SETTINGS: &[$crate::config::SettingInfo] = &[
            $($crate::config::SettingInfo {
                name: settings!(@name $field $($toml)?),
                kind: settings!(@kind $ty $(, $base)?),
                doc_text: concat!($($doc),+),
                readers: $readers,
                default: || {
                    let v: $ty = $default;
                    $crate::config::registry::render(&v)
                },
                bounds: settings!(@bounds $ty, [$($min)?], [$($max)?]),
            },)*
        ];
    };
    (@kind $ty:ty) => { <$ty as $crate::config::registry::SettingType>::kind };
    (@kind $ty:ty, $base:ident) => {
        (|| format!("path (a relative one is relative to {})", $crate::config::paths::Base::$base.describe()))
            as fn() -> String
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $toml:literal) => { $toml };
    (@range $key:ident, $v:expr, [], []) => {};
    (@range $key:ident, $v:expr, [$($min:expr)?], [$($max:expr)?]) => {
        $crate::config::registry::check_range($v, None $(.or(Some($min)))?, None $(.or(Some($max)))?)
            .map_err(|r| ($key, r))?;
    };
    (@bounds $ty:ty, [], []) => { None };
    (@bounds $ty:ty, [$($min:expr)?], [$($max:expr)?]) => {
        Some((|| {
            $crate::config::registry::range_text::<$ty>(None $(.or(Some($min)))?, None $(.or(Some($max)))?)
        }) as fn() -> String)
    };
}

pub(super) use settings;

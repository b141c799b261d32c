//! Declared params: type, default, required, enum, range and item types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a param or of an array's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// Text. `-p x=123` gives the string `"123"`.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list; see `items`. On the command line: `-p hosts=[a,b]`.
    Array,
    /// A mapping. On the command line: `-p labels={app: web}`.
    Object,
}

impl ParamType {
    /// The name as written in runbooks.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }
}

/// A declared param.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The value's type (default `string`).
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    /// The value used when none is given. Must match the type, enum and range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The run refuses to start without a value (a param with a default is never missing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The only values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub allowed: Option<Vec<Value>>,
    /// What the param means, for `--help`-like listings and the UI form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Smallest allowed value (numbers), or length (strings and arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest allowed value (numbers), or length (strings and arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// The type of each item of an `array` param.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<ItemsSpec>>,
}

/// The type of the items of an array param.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemsSpec {
    /// The items' type (default `string`).
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    /// The only values allowed for an item.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub allowed: Option<Vec<Value>>,
    /// Smallest allowed item (numbers) or item length (strings, arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Largest allowed item (numbers) or item length (strings, arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// The type of nested items, for arrays of arrays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<ItemsSpec>>,
}

impl ParamSpec {
    /// The constraints of this param as an item spec, to check values with one function.
    pub fn as_items(&self) -> ItemsSpec {
        ItemsSpec {
            kind: self.kind,
            allowed: self.allowed.clone(),
            minimum: self.minimum,
            maximum: self.maximum,
            items: self.items.clone(),
        }
    }
}

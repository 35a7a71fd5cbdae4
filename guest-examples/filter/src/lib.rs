//! `filter`: keeps JSON records whose field equals a configured value.
//!
//! Settings: `field` (a top-level field name, required) and `equals` (the
//! value to match, compared with the field's string form, required).
//! Example: `field=level equals=ERROR` keeps `{"level":"ERROR", ...}`.
//! Records that are not JSON objects are rejected.

use weir_operator::{Config, Error, Input, Operator, export};

struct FieldEquals {
    field: String,
    equals: String,
}

impl Operator for FieldEquals {
    fn process(
        &mut self,
        record: &Input<'_>,
        out: &mut weir_operator::Emitter,
    ) -> Result<(), Error> {
        let value: serde_json::Value = record.json()?;
        let object = value
            .as_object()
            .ok_or_else(|| Error::reject("not a JSON object"))?;
        let matches = match object.get(&self.field) {
            Some(serde_json::Value::String(s)) => s == &self.equals,
            // Numbers, booleans and null match their JSON text (`5`, `true`).
            Some(other) => {
                let text = other.to_string();
                text == self.equals
            }
            None => false,
        };
        if matches {
            out.forward(record);
        }
        Ok(())
    }
}

fn build(config: &Config) -> Result<FieldEquals, String> {
    Ok(FieldEquals {
        field: config.require("field")?.to_string(),
        equals: config.require("equals")?.to_string(),
    })
}

export!(build);

//! `receipt`: turns each purchase event into a receipt, as soon as it arrives.
//!
//! Settings: `currency` (the currency code written on every receipt,
//! default `EUR`).
//!
//! Input: a JSON object
//! `{"order_id": str, "customer": str, "items": [{"sku": str, "qty": int, "price_cents": int}, ...], ...}`;
//! other fields, in the event and in its items, are ignored.
//!
//! Output (`main`), one record per input record, with the input's
//! timestamp and the customer as its key:
//! `{"order_id": str, "customer": str, "lines": [{"sku": str, "qty": int, "price_cents": int, "line_total_cents": int}, ...], "total_cents": int, "currency": str}`
//! where `line_total_cents = qty * price_cents` and `total_cents` is the sum
//! of the line totals (0 for an empty `items` list). Lines keep the items'
//! order.
//!
//! Rejected: records that are not such JSON (a missing field, a field of the
//! wrong type, a `qty` or `price_cents` that is not an integer), an item
//! with a negative `qty` or `price_cents`, and totals that overflow a signed
//! 64-bit integer.

use serde::{Deserialize, Serialize};
use weir_operator::{Config, Emitter, Error, Input, MAIN, Operator, export};

#[derive(Deserialize)]
struct Purchase {
    order_id: String,
    customer: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: i64,
    price_cents: i64,
}

#[derive(Serialize)]
struct Receipt<'a> {
    order_id: &'a str,
    customer: &'a str,
    lines: Vec<Line<'a>>,
    total_cents: i64,
    currency: &'a str,
}

#[derive(Serialize)]
struct Line<'a> {
    sku: &'a str,
    qty: i64,
    price_cents: i64,
    line_total_cents: i64,
}

struct Receipts {
    currency: String,
}

impl Operator for Receipts {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        let purchase: Purchase = record.json()?;
        let lines = purchase
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| line(i, item))
            .collect::<Result<Vec<_>, _>>()?;
        let receipt = Receipt {
            order_id: &purchase.order_id,
            customer: &purchase.customer,
            total_cents: total(&lines)?,
            lines,
            currency: &self.currency,
        };
        out.send_json(
            MAIN,
            Some(purchase.customer.as_bytes()),
            record.timestamp(),
            &receipt,
        )
    }
}

/// The receipt line for item number `index` (from 0).
fn line(index: usize, item: &Item) -> Result<Line<'_>, Error> {
    if item.qty < 0 || item.price_cents < 0 {
        return Err(Error::reject(format!(
            "item {index} (sku {:?}): negative qty or price_cents",
            item.sku
        )));
    }
    let line_total_cents = item.qty.checked_mul(item.price_cents).ok_or_else(|| {
        Error::reject(format!(
            "item {index} (sku {:?}): line total overflows",
            item.sku
        ))
    })?;
    Ok(Line {
        sku: &item.sku,
        qty: item.qty,
        price_cents: item.price_cents,
        line_total_cents,
    })
}

fn total(lines: &[Line<'_>]) -> Result<i64, Error> {
    lines
        .iter()
        .try_fold(0i64, |sum, line| sum.checked_add(line.line_total_cents))
        .ok_or_else(|| Error::reject("order total overflows"))
}

fn build(config: &Config) -> Result<Receipts, String> {
    let currency = config.get("currency").unwrap_or("EUR");
    if currency.is_empty() {
        return Err("setting `currency` must not be empty".into());
    }
    Ok(Receipts {
        currency: currency.to_string(),
    })
}

export!(build);

//! One-line operators for the common shapes: filter, map, filter-map, flat-map.
//! Each keeps the input record's key and timestamp and writes to `main`.

use crate::{Emitter, Error, Input, Operator};

/// Keeps the records for which `keep` returns true, unchanged.
pub fn filter<F: FnMut(&Input<'_>) -> bool>(keep: F) -> impl Operator {
    Filter(keep)
}

/// Replaces each record's value with what `f` returns.
pub fn map<F: FnMut(&Input<'_>) -> Result<Vec<u8>, Error>>(f: F) -> impl Operator {
    Map(f)
}

/// Replaces each record's value with what `f` returns, or drops it on `None`.
pub fn filter_map<F: FnMut(&Input<'_>) -> Result<Option<Vec<u8>>, Error>>(f: F) -> impl Operator {
    FilterMap(f)
}

/// Replaces each record with one record per value `f` returns.
pub fn flat_map<F: FnMut(&Input<'_>) -> Result<Vec<Vec<u8>>, Error>>(f: F) -> impl Operator {
    FlatMap(f)
}

struct Filter<F>(F);
struct Map<F>(F);
struct FilterMap<F>(F);
struct FlatMap<F>(F);

impl<F: FnMut(&Input<'_>) -> bool> Operator for Filter<F> {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        if (self.0)(record) {
            out.forward(record);
        }
        Ok(())
    }
}

impl<F: FnMut(&Input<'_>) -> Result<Vec<u8>, Error>> Operator for Map<F> {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        out.emit(record, &(self.0)(record)?);
        Ok(())
    }
}

impl<F: FnMut(&Input<'_>) -> Result<Option<Vec<u8>>, Error>> Operator for FilterMap<F> {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        if let Some(value) = (self.0)(record)? {
            out.emit(record, &value);
        }
        Ok(())
    }
}

impl<F: FnMut(&Input<'_>) -> Result<Vec<Vec<u8>>, Error>> Operator for FlatMap<F> {
    fn process(&mut self, record: &Input<'_>, out: &mut Emitter) -> Result<(), Error> {
        for value in (self.0)(record)? {
            out.emit(record, &value);
        }
        Ok(())
    }
}

//! Guest component: exports the shared filters across the component-model
//! boundary. Built with `cargo build --release --target wasm32-wasip2`, which
//! emits a component directly.

wit_bindgen::generate!({
    world: "filters",
    path: "../wit",
});

struct Component;

impl Guest for Component {
    fn filter_kafka(batch: Vec<u8>) -> Vec<u8> {
        weir_bench_filter::filter_kafka(&batch)
    }
    fn filter_kafka_copy(batch: Vec<u8>) -> Vec<u8> {
        weir_bench_filter::filter_kafka_copy(&batch)
    }
    fn filter_framed(batch: Vec<u8>) -> Vec<u8> {
        weir_bench_filter::filter_framed(&batch)
    }
    fn filter_framed_copy(batch: Vec<u8>) -> Vec<u8> {
        weir_bench_filter::filter_framed_copy(&batch)
    }
    fn echo(batch: Vec<u8>) -> Vec<u8> {
        batch
    }
}

export!(Component);

//! The shared DNS loop (rmox_driver::dns) on smol, against in-process responders
//! (rmox_driver::testing_dns).

use rmox_driver::dns::LocalBoxFuture;
use rmox_driver::testing_dns;
use std::rc::Rc;

use rmox_runtime_smol::SmolRt;

thread_local! {
    /// The executor of this test's thread: the runtime value and `block_on` share it.
    static EX: Rc<async_executor::LocalExecutor<'static>> = Rc::new(async_executor::LocalExecutor::new());
}

#[allow(non_snake_case)]
fn SmolRt() -> SmolRt {
    SmolRt::new(EX.with(Rc::clone))
}

fn block_on(f: LocalBoxFuture<'static, ()>) {
    EX.with(|ex| async_io::block_on(ex.run(f)));
}

#[test]
fn answers_and_caches() {
    testing_dns::answers_and_caches(SmolRt(), block_on);
}

#[test]
fn truncated_answer_retried_over_tcp() {
    testing_dns::truncated_answer_retried_over_tcp(SmolRt(), block_on);
}

#[test]
fn timeout_moves_to_next_server() {
    testing_dns::timeout_moves_to_next_server(SmolRt(), block_on);
}

#[test]
fn ad_bit_only_from_trusted() {
    testing_dns::ad_bit_only_from_trusted(SmolRt(), block_on);
}

#[test]
fn abandoned_request_does_not_stop_the_loop() {
    testing_dns::abandoned_request_does_not_stop_the_loop(SmolRt(), block_on);
}

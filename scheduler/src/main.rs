//! `aitbc-scheduler`: settlement, payouts and the sweeper, in batches (filled by the
//! scheduler issue).

fn main() {
    eprintln!("aitbc-scheduler: settle, payout and sweep are not built yet");
    std::process::exit(2);
}

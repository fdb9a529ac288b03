//! Baseline for docs/PERFORMANCE.md: tokio-modbus's own TCP client reading holding registers
//! back to back, with nothing of gkgw around it (no timeout wrapper, planner or decoder).
//! `cargo run --release --example raw_modbus_client -- 127.0.0.1:5020 1 0 8 50000`

use std::time::Instant;

use tokio_modbus::client::Reader;
use tokio_modbus::slave::Slave;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .map_or("127.0.0.1:5020", String::as_str)
        .parse()?;
    let unit: u8 = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let address: u16 = args.get(3).map_or(Ok(0), |s| s.parse())?;
    let count: u16 = args.get(4).map_or(Ok(8), |s| s.parse())?;
    let n: u64 = args.get(5).map_or(Ok(50_000), |s| s.parse())?;
    let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(unit)).await?;
    let started = Instant::now();
    for _ in 0..n {
        ctx.read_holding_registers(address, count).await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} requests in {secs:.2} s: {:.0} requests/s",
        n as f64 / secs
    );
    Ok(())
}

//! One Modbus connection (TCP, RTU on a serial port, or RTU over TCP) with the rules that keep it
//! honest: every request has a timeout, and after a timeout or a malformed reply the connection
//! is thrown away. Over TCP the next call would otherwise fail with a header mismatch; over RTU
//! it would silently return the *late answer to the previous request* (CRATES.md). For RTU the
//! port is closed, the bus is left quiet long enough for a late answer to finish, and the port
//! is reopened with its buffers cleared.
//!
//! Architecture invariant: only this file calls tokio-modbus's client API.

use std::time::{Duration, Instant};

use tokio_modbus::client::{Client, Context, Reader, Writer};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_modbus::ExceptionCode;

use super::profile::RegisterKind;
use crate::config::{ModbusBus, Parity};

/// How the bus is reached: the config's type, parsed and checked when the config was read.
pub use crate::config::ModbusTransport as Transport;

/// What connecting means for this transport, naming the port or address.
fn connect_action(t: &Transport) -> String {
    match t {
        Transport::Tcp { address } => format!("connect to modbus tcp {address}"),
        Transport::Rtu(line) => format!("open serial port {}", line.port),
        Transport::RtuOverTcp { address } => format!("connect to rtu-over-tcp {address}"),
    }
}

/// Why a request failed, in words a technician can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no answer within {0:?} (timeout)")]
    Timeout(Duration),
    #[error("device answered with exception {}: {}", exception_number(*.0), exception_name(*.0))]
    Exception(ExceptionCode),
    /// `action` names the port or address, e.g. "open serial port /dev/ttyUSB0".
    #[error("cannot {action}: {cause}")]
    Connect {
        action: String,
        cause: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    #[error("malformed reply (CRC, header or length mismatch): {0}")]
    Protocol(String),
}

pub fn exception_number(c: ExceptionCode) -> u8 {
    match c {
        ExceptionCode::IllegalFunction => 1,
        ExceptionCode::IllegalDataAddress => 2,
        ExceptionCode::IllegalDataValue => 3,
        ExceptionCode::ServerDeviceFailure => 4,
        ExceptionCode::Acknowledge => 5,
        ExceptionCode::ServerDeviceBusy => 6,
        ExceptionCode::MemoryParityError => 8,
        ExceptionCode::GatewayPathUnavailable => 10,
        ExceptionCode::GatewayTargetDevice => 11,
        ExceptionCode::Custom(n) => n,
    }
}

pub fn exception_name(c: ExceptionCode) -> &'static str {
    match c {
        ExceptionCode::IllegalFunction => {
            "illegal function (the device does not support this request)"
        }
        ExceptionCode::IllegalDataAddress => {
            "illegal data address (no such register on this device)"
        }
        ExceptionCode::IllegalDataValue => {
            "illegal data value (often: too many registers in one request)"
        }
        ExceptionCode::ServerDeviceFailure => "server device failure",
        ExceptionCode::Acknowledge => "acknowledge (busy with a long operation)",
        ExceptionCode::ServerDeviceBusy => "server device busy",
        ExceptionCode::MemoryParityError => "memory parity error",
        ExceptionCode::GatewayPathUnavailable => "gateway path unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway target device failed to respond",
        ExceptionCode::Custom(_) => "non-standard exception",
    }
}

/// Data read from one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

pub struct Link {
    transport: Transport,
    timeout: Duration,
    ctx: Option<Context>,
    /// Silence kept on the bus between the end of one exchange and the next request (RTU:
    /// at least 3.5 character times; slow devices may need more).
    frame_gap: Duration,
    /// When the last exchange ended.
    last_end: Option<Instant>,
}

/// The RTU inter-frame silence: 3.5 characters of 11 bits, fixed at 1.75 ms above 19200 baud.
pub fn rtu_frame_gap(baud: u32) -> Duration {
    if baud > 19200 {
        Duration::from_micros(1750)
    } else {
        Duration::from_secs_f64(3.5 * 11.0 / f64::from(baud.max(1)))
    }
}

fn to_serial_parity(p: Parity) -> tokio_serial::Parity {
    match p {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    }
}

impl Link {
    /// The link of a configured bus: its transport, request timeout and inter-frame delay.
    pub fn for_bus(bus: &ModbusBus) -> Link {
        Link::new(bus.transport.clone(), Duration::from_millis(bus.timeout_ms))
            .with_inter_frame_delay(bus.inter_frame_delay_ms.map(Duration::from_millis))
    }

    pub fn new(transport: Transport, timeout: Duration) -> Link {
        let frame_gap = match &transport {
            Transport::Tcp { .. } => Duration::ZERO,
            Transport::Rtu(line) => rtu_frame_gap(line.baud),
            Transport::RtuOverTcp { .. } => Duration::from_millis(2),
        };
        Link {
            transport,
            timeout,
            ctx: None,
            frame_gap,
            last_end: None,
        }
    }

    /// A longer silence between exchanges (`inter_frame_delay_ms` of a bus) for devices that
    /// need time between requests; never shorter than the protocol's.
    pub fn with_inter_frame_delay(mut self, delay: Option<Duration>) -> Link {
        if let Some(d) = delay {
            self.frame_gap = self.frame_gap.max(d);
        }
        self
    }

    /// Waits out the inter-frame silence after the previous exchange.
    async fn quiet(&mut self) {
        // Only when there is silence left to keep: a timer rounds up to the next millisecond.
        if let Some(until) = self
            .last_end
            .map(|end| end + self.frame_gap)
            .filter(|u| *u > Instant::now())
        {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    async fn connect(transport: Transport, timeout: Duration) -> Result<Context, Error> {
        let connect = async {
            match &transport {
                Transport::Tcp { address } => tokio_modbus::client::tcp::connect(*address).await,
                Transport::RtuOverTcp { address } => {
                    let s = tokio::net::TcpStream::connect(address).await?;
                    s.set_nodelay(true)?;
                    Ok(tokio_modbus::client::rtu::attach(s))
                }
                Transport::Rtu(line) => {
                    use tokio_serial::SerialPort as _;
                    let data_bits = match line.data_bits {
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    };
                    let stop_bits = if line.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    };
                    let stream = tokio_serial::SerialStream::open(
                        &tokio_serial::new(&line.port, line.baud)
                            .parity(to_serial_parity(line.parity))
                            .data_bits(data_bits)
                            .stop_bits(stop_bits),
                    )?;
                    // Anything still in the buffers belongs to an earlier, abandoned request.
                    stream.clear(tokio_serial::ClearBuffer::All)?;
                    Ok(tokio_modbus::client::rtu::attach(stream))
                }
            }
        };
        let failed = |cause| Error::Connect {
            action: connect_action(&transport),
            cause,
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(failed(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))),
        }
    }

    /// Throws the connection away after a failure (see the module doc).
    pub async fn reset(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let _ = tokio::time::timeout(Duration::from_millis(100), ctx.disconnect()).await;
        }
        if matches!(
            self.transport,
            Transport::Rtu(_) | Transport::RtuOverTcp { .. }
        ) {
            // A late answer still on the wire ends within a frame time or so; the reopened
            // port's buffers are cleared. One that comes later still carries its unit id and
            // is refused by the header check (the caller retries once).
            tokio::time::sleep(2 * self.frame_gap + Duration::from_millis(10)).await;
        }
    }

    async fn ctx(&mut self, unit: u8) -> Result<&mut Context, Error> {
        self.quiet().await;
        if self.ctx.is_none() {
            self.ctx = Some(Link::connect(self.transport.clone(), self.timeout).await?);
        }
        let ctx = self.ctx.as_mut().expect("connected just above");
        ctx.set_slave(Slave(unit));
        Ok(ctx)
    }

    async fn finish<T>(
        &mut self,
        r: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        self.last_end = Some(Instant::now());
        let err = match r {
            Ok(Ok(Ok(v))) => return Ok(v),
            Ok(Ok(Err(code))) => return Err(Error::Exception(code)),
            Ok(Err(tokio_modbus::Error::Transport(e))) => Error::Io(e),
            Ok(Err(tokio_modbus::Error::Protocol(e))) => Error::Protocol(e.to_string()),
            Err(_) => Error::Timeout(self.timeout),
        };
        self.reset().await;
        Err(err)
    }

    /// Reads `count` items of `kind` at `address` from `unit`; returns the data and the latency.
    pub async fn read(
        &mut self,
        unit: u8,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<(Data, Duration), Error> {
        let timeout = self.timeout;
        let started = Instant::now();
        let ctx = self.ctx(unit).await?;
        let r = match kind {
            RegisterKind::Holding => {
                let r =
                    tokio::time::timeout(timeout, ctx.read_holding_registers(address, count)).await;
                self.finish(r).await.map(Data::Registers)
            }
            RegisterKind::Input => {
                let r =
                    tokio::time::timeout(timeout, ctx.read_input_registers(address, count)).await;
                self.finish(r).await.map(Data::Registers)
            }
            RegisterKind::Coil => {
                let r = tokio::time::timeout(timeout, ctx.read_coils(address, count)).await;
                self.finish(r).await.map(|mut b| {
                    b.truncate(count as usize);
                    Data::Bits(b)
                })
            }
            RegisterKind::DiscreteInput => {
                let r =
                    tokio::time::timeout(timeout, ctx.read_discrete_inputs(address, count)).await;
                self.finish(r).await.map(|mut b| {
                    b.truncate(count as usize);
                    Data::Bits(b)
                })
            }
        };
        r.map(|d| (d, started.elapsed()))
    }

    /// Writes registers (function 06 for one, 16 for several) or one coil (function 05).
    pub async fn write(&mut self, unit: u8, target: &WriteTarget) -> Result<(), Error> {
        let timeout = self.timeout;
        let ctx = self.ctx(unit).await?;
        match target {
            WriteTarget::Registers { address, words } if words.len() == 1 => {
                let r =
                    tokio::time::timeout(timeout, ctx.write_single_register(*address, words[0]))
                        .await;
                self.finish(r).await
            }
            WriteTarget::Registers { address, words } => {
                let r =
                    tokio::time::timeout(timeout, ctx.write_multiple_registers(*address, words))
                        .await;
                self.finish(r).await
            }
            WriteTarget::Coil { address, value } => {
                let r =
                    tokio::time::timeout(timeout, ctx.write_single_coil(*address, *value)).await;
                self.finish(r).await
            }
        }
    }
}

/// What a write changes on the device.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteTarget {
    Registers { address: u16, words: Vec<u16> },
    Coil { address: u16, value: bool },
}

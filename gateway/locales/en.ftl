# The dashboard in English. Every id here must be in sw.ftl too (test:
# web::ui::i18n::tests::both_languages_have_the_same_messages).
brand = Green Kitchen
switch-language = Kiswahili
footer-offline = This page is served by the gateway on site; it works without internet.
connection-lost = Connection to the gateway lost. Values are not updating; retrying…
connection-back = Connected again.
just-now = just now
no-reading = no reading yet
alarms-word = alarms

nav-overview = Overview
nav-digester = Digester
nav-gas = Gas & compressor
nav-meters = Meters
nav-alarms = Alarms
nav-logbook = Logbook
nav-system = System

title-overview = Plant overview
title-digester = Digester
title-gas = Gas and compressor
title-meters = Field meters
title-alarms = Alarms
title-logbook = Logbook
title-system = System

alarms-active = { $count ->
    [one] 1 active alarm
   *[other] { $count } active alarms
}
ago-seconds = { $n } s ago
ago-minutes = { $n } min ago
ago-hours = { $n } h ago
ago-days = { $n } days ago

gas-today = Gas made today
gas-yesterday = Gas made yesterday
gas-metered = metered
meters-attention = Meters needing attention
see-meters = See all meters
span-24h = Last 24 hours
span-7d = Last 7 days
charts-need-js = The chart needs JavaScript; the table below has the daily figures.
kpis-7-days = Daily figures, last 7 days
day = Day

kpi-normal-gas-nm3 = Biogas (Nm³)
kpi-methane-nm3 = Methane (Nm³)
kpi-energy-kwh = Energy (kWh)
kpi-waste-fed-kg = Waste fed (kg)
kpi-specific-yield-nm3-per-kg-vs = Yield (Nm³/kg VS)
kpi-organic-loading-rate = Loading (kg VS/m³·d)
kpi-hrt-days = Retention (days)
kpi-cylinders-filled = Cylinders filled
kpi-compressor-kwh = Compressor (kWh)
kpi-compressor-kwh-per-nm3 = Compressor kWh per Nm³
kpi-gas-sold-nm3 = Gas sold (Nm³)
kpi-gas-utilisation = Gas used / made

q-digester-pressure = Digester pressure
q-digester-temperature = Digester temperature
q-digester-ph = Digester pH
q-digester-fos-tac = FOS/TAC
q-biogas-ch4 = Methane (CH₄)
q-biogas-co2 = Carbon dioxide (CO₂)
q-biogas-h2s = Hydrogen sulphide (H₂S)
q-gas-flow = Gas flow
q-gas-volume = Gas meter total
q-compressor-state = Compressor
q-compressor-discharge-pressure = Cylinder filling pressure
q-compressor-temperature = Compressor temperature
q-compressor-current = Compressor current
q-contact-run-hours = Compressor run hours
q-contact-starts = Compressor starts
q-power-active = Electric power
q-kitchen-ch4-lel = Kitchen gas leak (% LEL)
q-meter-credit = Credit
q-meter-gas-used = Gas used
q-meter-energy-used = Energy used
q-meter-valve = Valve
q-meter-relay = Relay
q-meter-battery = Battery
q-meter-rssi = Signal
q-meter-status = Status

meters-count = { $count ->
    [one] 1 meter
   *[other] { $count } meters
}
meters-sorted = offline and low credit first; click a heading to sort
col-meter = Meter
col-credit = Credit
col-used = Used (total)
col-valve = Valve / relay
col-battery = Battery
col-signal = Signal
col-last-seen = Last seen
low-credit = low
offline = offline
meter-unknown = No such meter has reported to this gateway.

severity-info = Information
severity-warning = Warning
severity-alarm = Alarm
severity-critical = DANGER
alarm-state-normal = normal
alarm-state-unack = active, not acknowledged
alarm-state-ack = active, acknowledged
alarm-state-cleared-unack = cleared, not acknowledged
alarm-shelved = shelved
alarm-silenced = silenced
alarms-disabled = Alarms are switched off in this gateway's configuration.
alarms-now = Now
alarms-none = No active alarms. The plant is quiet.
alarms-history = Recent history
since = since
action-ack = Acknowledge
action-reset = Reset
action-shelve = Shelve
action-unshelve = Unshelve
shelve-hours = for hours
note = Note
col-time = Time
col-alarm = Alarm
col-action = What happened
col-by = By

kind-waste-fed = Waste fed
kind-water-added = Water added
kind-digestate-out = Digestate out
kind-cylinders-filled = Cylinders filled
kind-cylinders-dispatched = Cylinders sent out
kind-lab-ph = Lab pH
kind-lab-fos-tac = Lab FOS/TAC
kind-note = Note
field-waste = Kind of waste
field-kg = Weight (kg)
field-litres = Volume (litres)
field-count = Number of cylinders
field-ph = pH
field-ratio = FOS/TAC ratio
field-text = Text
field-at = When (empty: now)
field-note = Note (optional)
field-form = Form
waste-household = Household / kitchen waste
waste-market = Market waste
waste-animal = Animal manure
waste-agricultural = Crop residues
hint-digestate = Give the weight or the volume.
hint-at = Site time. Leave empty for now; at most 7 days back.
logbook-save = Save
logbook-recent = Last 14 days
logbook-added = Saved as entry { $id }.
revision = revision { $n }
col-kind = Entry
col-values = Values
error-not-a-number = must be a number, like 12.5

health = Gateway health
sys-version = Version
sys-uptime = Running for
sys-clock = Clock
clock-synced = synchronised (NTP)
clock-unsynced = NOT synchronised: times may be wrong
sys-store = Local store
readings = readings
sys-disk = Disk
free = free
sys-mqtt = Field broker (MQTT)
connections = connections
messages = messages
sys-readings = Readings
accepted = accepted
rejected = rejected
sys-influx = InfluxDB
written = written
errors = errors
sys-consumers = Delivery (consumers of the store)
col-consumer = Consumer
col-backlog = Waiting
col-oldest-unsent = Oldest unsent
sys-devices = Modbus devices
col-device = Device
col-state = State
col-requests = Requests
col-errors = Errors
col-last-answer = Last answer
sys-uplink = Uplink to the platform
uplink-off = No uplink configured.
uplink-url = Platform
uplink-backlog = Batches waiting
uplink-oldest = Oldest waiting
uplink-last-success = Last delivered
uplink-last-error = Last error
sys-commands = Commands from the platform
commands-pending = { $count ->
    [one] 1 command waiting for its meter
   *[other] { $count } commands waiting for their meters
}
sys-details = Technician's details

state-idle = idle
state-starting = starting
state-running = running
state-stopping = stopping
state-lockout = locked out
state-error = ERROR
state-open = open
state-closed = closed
state-locked = locked

log-out = Log out
nav-users = Users
role-viewer = viewer
role-manager = manager
role-admin = admin
alarms-manager-only = Sign in as a manager to acknowledge, shelve or reset.
logbook-manager-only = Sign in as a manager to write in the logbook.

## Logbook: corrections, withdrawals and the reasons a form is refused
logbook-changed = Entry { $id } changed.
logbook-change = Correct or withdraw (until { $until })
logbook-correct = Save the correction
logbook-withdraw = Withdraw this entry
field-reason = Reason for withdrawing
invalid-required = required
invalid-empty = must not be empty
invalid-too-long = { $n } characters; at most { $max }
invalid-by = must be a name of at most { $max } characters
invalid-not-a-number = must be a number
invalid-not-positive = must be more than 0
invalid-implausible = { $x } is more than { $max } { $unit } in one entry, which is not plausible
invalid-outside = { $x } is outside { $lo }–{ $hi }
invalid-not-whole = { $x } is not a whole number
invalid-at-least-one = must be at least 1
invalid-not-of-kind = this kind of entry does not take this value
invalid-waste = not one of the waste types in the list
invalid-kg-and-litres = give kg or litres, not both
invalid-kg-or-litres = give the amount in kg or in litres
invalid-kind = not a kind of logbook entry
invalid-at-format = not a date and time
invalid-at-old = before 2020, not a time this plant logged
invalid-at-future = in the future (more than 5 minutes after the gateway's clock)
refused-window = This entry can be corrected or withdrawn only within { $hours } hours of being recorded.
refused-withdrawn = This entry has been withdrawn.
refused-missing = There is no entry { $id }.

## Users (admins)
title-users = Users
users-name = User name
users-role = Role
users-last-login = Last sign-in
users-sessions = Sessions
users-never = never
users-remove = Remove
users-add = Add a user
users-add-button = Add
users-password = Password (at least { $min } characters)
users-set-password = Set a password
users-set-button = Set
users-set-hint = A new password ends the user's sessions.
users-done-added = { $name } added as { $role }.
users-done-removed = { $name } removed; their sessions have ended.
users-done-password = New password for { $name }; their sessions have ended.
users-error-name = "{ $name }" cannot be a user name: 1 to 32 characters of a–z, 0–9, ".", "_" and "-", starting with a letter or digit.
users-error-role = Choose viewer, manager or admin.
users-error-short = The password is too short: at least { $min } characters.
users-error-long = The password is too long.
users-error-self = You cannot remove yourself (another admin, or `gkgw user remove`, can).
users-error-exists = { $name } exists already; set a new password instead.
users-error-missing = There is no user { $name }.
users-error-store = The gateway could not save this; see its log.

## Signing in, and pages a role may not open
login-title = Sign in
login-user = User name
login-password = Password
login-button = Sign in
login-expired = The sign-in form had expired. Please try again.
login-unavailable = The gateway cannot sign anyone in right now; see its log.
login-wrong = Wrong user name or password.
login-throttled = { $secs ->
    [one] Too many failed sign-ins. Try again in 1 second.
   *[other] Too many failed sign-ins. Try again in { $secs } seconds.
}
forbidden-title = Not allowed
forbidden-role = This needs the { $need } role (you are { $have }).
forbidden-back = Back to the overview
session-ended = Your session has ended; values are no longer updating.
sign-in-again = Sign in again

## Alarm messages of the built-in rules (a message the site wrote is shown as written)
alarm-digester-overpressure = digester gas pressure is high: check the relief valve and use or flare gas
alarm-leak = digester pressure is falling while no gas flows: a leak
alarm-air-ingress = methane falling while oxygen rises: air is getting into the gas
alarm-biogas-o2-high = oxygen in the biogas: explosive when compressed, stop the compressor
alarm-biogas-ch4-low = methane below 50 %: souring or air ingress
alarm-biogas-ch4-very-low = methane below 45 %: stop feeding, check pH and FOS/TAC
alarm-biogas-h2s-high = H2S above 1000 ppm: the scrubber is spent
alarm-ph-low = pH below 6.8: acidosis, reduce feeding
alarm-ph-high = pH above 8: ammonia inhibition
alarm-fos-tac-high = FOS/TAC above 0.4: cut feeding
alarm-fos-tac-failing = FOS/TAC above 0.6: the digester is failing
alarm-slurry-cold = slurry below 20 °C: gas production slows
alarm-slurry-cooling = slurry temperature dropping faster than 1 °C a day
alarm-kitchen-methane-10-lel = methane in the kitchen at 10 % LEL: find the leak
alarm-kitchen-methane-20-lel = methane in the kitchen at 20 % LEL: ventilate, no flames
alarm-kitchen-methane-40-lel = methane in the kitchen at 40 % LEL: shut the gas, leave the kitchen
alarm-kitchen-h2s = H2S in the kitchen above 5 ppm (short-term limit): ventilate
alarm-compressor-overtemperature = the compressor tripped on over-temperature
alarm-compressor-high-pressure = the compressor tripped on discharge over-pressure
alarm-compressor-low-suction = low suction: the compressor is pulling a vacuum on the digester
alarm-compressor-overcurrent = the compressor motor tripped on overcurrent
alarm-meter-low-credit = credit is low
alarm-meter-credit-exhausted = credit is used up
alarm-meter-valve-closed = the meter closed its valve
alarm-meter-relay-open = the meter cut the supply
alarm-meter-daily-use = use today is above the daily limit
alarm-meter-tamper = the meter reports tampering
alarm-meter-low-battery = the meter's battery is low
alarm-meter-offline = no message from this meter
alarm-device-offline = no reading from this device
alarm-stale = no good reading: the rules that read it are suppressed
alarm-orphan = its rule is no longer configured: acknowledge and reset it
alarm-disk-full = the gateway's disk is full: the oldest readings are removed to keep the newest; free space on the SD card

## Why a KPI figure is missing (shown when the pointer rests on "—")
missing-gas-volume = no gas volume in this period
missing-pressure = no gas pressure reading
missing-gas-temperature = no gas temperature reading
missing-atmospheric-pressure = no atmospheric pressure (neither the site altitude nor a measured pressure)
missing-ch4 = no methane reading
missing-feed = no waste fed is logged
missing-water = no water added is logged
missing-compressor-energy = no compressor energy reading
missing-gas-sold = no gas meter usage reported
missing-cylinders = no cylinders filled are logged
missing-not-configured = { $what } is not configured
missing-zero = { $what } is zero
missing-bad = { $what } is out of range or not a number

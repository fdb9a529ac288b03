# Dashibodi kwa Kiswahili. Kila kitambulisho hapa kiwe pia katika en.ftl.
brand = Green Kitchen
switch-language = English
footer-offline = Ukurasa huu unatolewa na kifaa cha lango hapa kituoni; unafanya kazi bila intaneti.
connection-lost = Muunganisho na lango umekatika. Thamani hazisasishwi; tunajaribu tena…
connection-back = Imeunganishwa tena.
just-now = sasa hivi
no-reading = bado hakuna kipimo
alarms-word = kengele

nav-overview = Muhtasari
nav-digester = Kimeng'enya
nav-gas = Gesi na kikandamizi
nav-meters = Mita
nav-alarms = Kengele
nav-logbook = Daftari
nav-system = Mfumo

title-overview = Muhtasari wa mtambo
title-digester = Kimeng'enya
title-gas = Gesi na kikandamizi
title-meters = Mita za wateja
title-alarms = Kengele
title-logbook = Daftari
title-system = Mfumo

alarms-active = { $count ->
    [one] Kengele 1 inalia
   *[other] Kengele { $count } zinazolia
}
ago-seconds = sekunde { $n } zilizopita
ago-minutes = dakika { $n } zilizopita
ago-hours = saa { $n } zilizopita
ago-days = siku { $n } zilizopita

gas-today = Gesi iliyozalishwa leo
gas-yesterday = Gesi iliyozalishwa jana
gas-metered = kwa mita
meters-attention = Mita zinazohitaji kuangaliwa
see-meters = Tazama mita zote
span-24h = Saa 24 zilizopita
span-7d = Siku 7 zilizopita
charts-need-js = Chati inahitaji JavaScript; jedwali hapa chini lina takwimu za kila siku.
kpis-7-days = Takwimu za kila siku, siku 7 zilizopita
day = Siku

kpi-normal-gas-nm3 = Biogesi (Nm³)
kpi-methane-nm3 = Methani (Nm³)
kpi-energy-kwh = Nishati (kWh)
kpi-waste-fed-kg = Taka zilizolishwa (kg)
kpi-specific-yield-nm3-per-kg-vs = Mavuno (Nm³/kg VS)
kpi-organic-loading-rate = Mzigo (kg VS/m³·siku)
kpi-hrt-days = Muda wa kukaa (siku)
kpi-cylinders-filled = Mitungi iliyojazwa
kpi-compressor-kwh = Kikandamizi (kWh)
kpi-compressor-kwh-per-nm3 = kWh za kikandamizi kwa Nm³
kpi-gas-sold-nm3 = Gesi iliyouzwa (Nm³)
kpi-gas-utilisation = Gesi iliyotumika / iliyozalishwa

q-digester-pressure = Shinikizo la kimeng'enya
q-digester-temperature = Joto la kimeng'enya
q-digester-ph = pH ya kimeng'enya
q-digester-fos-tac = FOS/TAC
q-biogas-ch4 = Methani (CH₄)
q-biogas-co2 = Kaboni dioksidi (CO₂)
q-biogas-h2s = Salfidi hidrojeni (H₂S)
q-gas-flow = Mtiririko wa gesi
q-gas-volume = Jumla ya mita ya gesi
q-compressor-state = Kikandamizi
q-compressor-discharge-pressure = Shinikizo la kujaza mitungi
q-compressor-temperature = Joto la kikandamizi
q-compressor-current = Mkondo wa kikandamizi
q-contact-run-hours = Saa za kufanya kazi za kikandamizi
q-contact-starts = Mara kikandamizi kilipowashwa
q-power-active = Nguvu ya umeme
q-kitchen-ch4-lel = Uvujaji wa gesi jikoni (% LEL)
q-meter-credit = Salio
q-meter-gas-used = Gesi iliyotumika
q-meter-energy-used = Umeme uliotumika
q-meter-valve = Vali
q-meter-relay = Swichi
q-meter-battery = Betri
q-meter-rssi = Mawimbi
q-meter-status = Hali

meters-count = { $count ->
    [one] Mita 1
   *[other] Mita { $count }
}
meters-sorted = zisizo hewani na zenye salio dogo kwanza; bofya kichwa kupanga
col-meter = Mita
col-credit = Salio
col-used = Iliyotumika (jumla)
col-valve = Vali / swichi
col-battery = Betri
col-signal = Mawimbi
col-last-seen = Ilionekana mwisho
low-credit = salio dogo
offline = haipo hewani
meter-unknown = Hakuna mita kama hiyo iliyoripoti kwa lango hili.

severity-info = Taarifa
severity-warning = Tahadhari
severity-alarm = Kengele
severity-critical = HATARI
alarm-state-normal = kawaida
alarm-state-unack = inalia, haijakubaliwa
alarm-state-ack = inalia, imekubaliwa
alarm-state-cleared-unack = imekwisha, haijakubaliwa
alarm-shelved = imewekwa kando
alarm-silenced = imenyamazishwa
alarms-disabled = Kengele zimezimwa katika usanidi wa lango hili.
alarms-now = Sasa
alarms-none = Hakuna kengele inayolia. Mtambo uko shwari.
alarms-history = Historia ya karibuni
since = tangu
action-ack = Kubali
action-reset = Weka upya
action-shelve = Weka kando
action-unshelve = Rudisha
shelve-hours = kwa saa
note = Maelezo
col-time = Wakati
col-alarm = Kengele
col-action = Kilichotokea
col-by = Na

kind-waste-fed = Taka zilizolishwa
kind-water-added = Maji yaliyoongezwa
kind-digestate-out = Mbolea iliyotolewa
kind-cylinders-filled = Mitungi iliyojazwa
kind-cylinders-dispatched = Mitungi iliyotumwa
kind-lab-ph = pH ya maabara
kind-lab-fos-tac = FOS/TAC ya maabara
kind-note = Maelezo
field-waste = Aina ya taka
field-kg = Uzito (kg)
field-litres = Ujazo (lita)
field-count = Idadi ya mitungi
field-ph = pH
field-ratio = Uwiano wa FOS/TAC
field-text = Maandishi
field-at = Lini (tupu: sasa)
field-note = Maelezo (si lazima)
field-form = Fomu
waste-household = Taka za nyumbani / jikoni
waste-market = Taka za sokoni
waste-animal = Samadi ya mifugo
waste-agricultural = Mabaki ya mazao
hint-digestate = Andika uzito au ujazo.
hint-at = Saa ya kituo. Acha tupu kwa sasa; siku 7 nyuma zaidi.
logbook-save = Hifadhi
logbook-recent = Siku 14 zilizopita
logbook-added = Imehifadhiwa kama ingizo { $id }.
revision = marekebisho { $n }
col-kind = Ingizo
col-values = Thamani
error-not-a-number = lazima iwe namba, kama 12.5

health = Afya ya lango
sys-version = Toleo
sys-uptime = Limekuwa likifanya kazi kwa
sys-clock = Saa
clock-synced = imesawazishwa (NTP)
clock-unsynced = HAIJASAWAZISHWA: nyakati zinaweza kuwa si sahihi
sys-store = Hifadhi ya ndani
readings = vipimo
sys-disk = Diski
free = wazi
sys-mqtt = Broka ya mita (MQTT)
connections = miunganisho
messages = jumbe
sys-readings = Vipimo
accepted = vimepokelewa
rejected = vimekataliwa
sys-influx = InfluxDB
written = vimeandikwa
errors = makosa
sys-consumers = Usafirishaji (watumiaji wa hifadhi)
col-consumer = Mtumiaji
col-backlog = Vinavyosubiri
col-oldest-unsent = Cha zamani zaidi kisichotumwa
sys-devices = Vifaa vya Modbus
col-device = Kifaa
col-state = Hali
col-requests = Maombi
col-errors = Makosa
col-last-answer = Jibu la mwisho
sys-uplink = Muunganisho na jukwaa kuu
uplink-off = Hakuna muunganisho na jukwaa uliosanidiwa.
uplink-url = Jukwaa
uplink-backlog = Vifurushi vinavyosubiri
uplink-oldest = Kinachosubiri tangu zamani
uplink-last-success = Kilifikishwa mwisho
uplink-last-error = Kosa la mwisho
sys-commands = Amri kutoka jukwaa kuu
commands-pending = { $count ->
    [one] Amri 1 inasubiri mita yake
   *[other] Amri { $count } zinasubiri mita zao
}
sys-details = Maelezo ya fundi

state-idle = imetulia
state-starting = inawaka
state-running = inafanya kazi
state-stopping = inazimika
state-lockout = imefungwa kwa usalama
state-error = HITILAFU
state-open = wazi
state-closed = imefungwa
state-locked = imefungwa kabisa

log-out = Toka
nav-users = Watumiaji
role-viewer = mtazamaji
role-manager = meneja
role-admin = msimamizi
alarms-manager-only = Ingia kama meneja ili kukubali, kuweka kando au kuweka upya.
logbook-manager-only = Ingia kama meneja ili kuandika kwenye daftari.

## Daftari: marekebisho, kuondoa ingizo na sababu za fomu kukataliwa
logbook-changed = Ingizo { $id } limebadilishwa.
logbook-change = Rekebisha au ondoa (hadi { $until })
logbook-correct = Hifadhi marekebisho
logbook-withdraw = Ondoa ingizo hili
field-reason = Sababu ya kuondoa
invalid-required = inahitajika
invalid-empty = haipaswi kuwa tupu
invalid-too-long = herufi { $n }; zisizidi { $max }
invalid-by = lazima liwe jina la herufi zisizozidi { $max }
invalid-not-a-number = lazima iwe namba
invalid-not-positive = lazima iwe zaidi ya 0
invalid-implausible = { $x } ni zaidi ya { $max } { $unit } kwa ingizo moja; haiwezekani
invalid-outside = { $x } iko nje ya { $lo }–{ $hi }
invalid-not-whole = { $x } si namba kamili
invalid-at-least-one = lazima iwe angalau 1
invalid-not-of-kind = aina hii ya ingizo haichukui thamani hii
invalid-waste = si mojawapo ya aina za taka kwenye orodha
invalid-kg-and-litres = toa kg au lita, si zote mbili
invalid-kg-or-litres = toa kiasi kwa kg au kwa lita
invalid-kind = si aina ya ingizo la daftari
invalid-at-format = si tarehe na saa sahihi
invalid-at-old = kabla ya 2020, si wakati ambao mtambo huu uliandika
invalid-at-future = ni wakati ujao (zaidi ya dakika 5 baada ya saa ya lango)
refused-window = Ingizo hili linaweza kurekebishwa au kuondolewa ndani ya saa { $hours } tu tangu kuandikwa.
refused-withdrawn = Ingizo hili limeondolewa.
refused-missing = Hakuna ingizo { $id }.

## Watumiaji (wasimamizi)
title-users = Watumiaji
users-name = Jina la mtumiaji
users-role = Jukumu
users-last-login = Aliingia mara ya mwisho
users-sessions = Vipindi
users-never = bado
users-remove = Ondoa
users-add = Ongeza mtumiaji
users-add-button = Ongeza
users-password = Nenosiri (angalau herufi { $min })
users-set-password = Weka nenosiri
users-set-button = Weka
users-set-hint = Nenosiri jipya linamaliza vipindi vya mtumiaji.
users-done-added = { $name } ameongezwa kama { $role }.
users-done-removed = { $name } ameondolewa; vipindi vyake vimekwisha.
users-done-password = Nenosiri jipya kwa { $name }; vipindi vyake vimekwisha.
users-error-name = "{ $name }" haliwezi kuwa jina la mtumiaji: herufi 1 hadi 32 za a–z, 0–9, ".", "_" na "-", likianza na herufi au tarakimu.
users-error-role = Chagua mtazamaji, meneja au msimamizi.
users-error-short = Nenosiri ni fupi mno: angalau herufi { $min }.
users-error-long = Nenosiri ni refu mno.
users-error-self = Huwezi kujiondoa mwenyewe (msimamizi mwingine, au `gkgw user remove`, anaweza).
users-error-exists = { $name } yupo tayari; weka nenosiri jipya badala yake.
users-error-missing = Hakuna mtumiaji { $name }.
users-error-store = Lango halikuweza kuhifadhi hili; angalia kumbukumbu zake.

## Kuingia, na kurasa ambazo jukumu haliruhusiwi kufungua
login-title = Ingia
login-user = Jina la mtumiaji
login-password = Nenosiri
login-button = Ingia
login-expired = Fomu ya kuingia ilikuwa imepitwa na wakati. Tafadhali jaribu tena.
login-unavailable = Lango haliwezi kumwingiza mtu yeyote sasa hivi; angalia kumbukumbu zake.
login-wrong = Jina la mtumiaji au nenosiri si sahihi.
login-throttled = Majaribio mengi mno ya kuingia yameshindwa. Jaribu tena baada ya sekunde { $secs }.
forbidden-title = Hairuhusiwi
forbidden-role = Hii inahitaji jukumu la { $need } (wewe ni { $have }).
forbidden-back = Rudi kwenye muhtasari
session-ended = Kipindi chako kimekwisha; thamani hazisasishwi tena.
sign-in-again = Ingia tena

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heimdall_lab.errors import ProtocolError
from heimdall_lab.kiwi import protocol
from heimdall_lab.recording import FRAME_SAMPLES


def _frame(seq=7, little_endian=False, smeter=600, gps=(3, 124934, 500_000_000)):
    rng = np.random.default_rng(seq)
    pairs = rng.integers(-32768, 32768, size=(512, 2), dtype=np.int16)
    data = protocol.encode_iq_frame(
        seq,
        pairs,
        smeter=smeter,
        last_gps_solution=gps[0],
        gpssec=gps[1],
        gpsnsec=gps[2],
        little_endian=little_endian,
    )
    return pairs, data


def test_iq_frame_layout_matches_the_kiwisdr_wire_format():
    pairs, data = _frame(seq=0x01020304, smeter=0x0A0B, gps=(5, 0x11223344, 0x55667788))
    assert len(data) == protocol.IQ_FRAME_BYTES == 3 + 1 + 4 + 2 + 10 + 2048
    assert data[:3] == b"SND"
    assert data[3] == protocol.FLAG_IQ
    assert data[4:8] == bytes([4, 3, 2, 1])  # seq little-endian
    assert data[8:10] == bytes([0x0A, 0x0B])  # smeter big-endian
    assert data[10] == 5 and data[11] == 0
    assert data[12:16] == bytes([0x44, 0x33, 0x22, 0x11])  # gpssec LE
    assert data[16:20] == bytes([0x88, 0x77, 0x66, 0x55])  # gpsnsec LE
    first_i = int(pairs[0, 0]).to_bytes(2, "big", signed=True)
    assert data[20:22] == first_i  # samples big-endian


@pytest.mark.parametrize("little_endian", [False, True])
def test_iq_frame_round_trip(little_endian):
    pairs, data = _frame(little_endian=little_endian)
    tag, body = protocol.split_tag(data)
    frame = protocol.decode_iq_frame(body)
    assert tag == "SND"
    assert frame.seq == 7 and frame.gpssec == 124934 and frame.gpsnsec == 500_000_000
    assert frame.has_fix
    assert frame.rssi_dbm == pytest.approx(0.1 * 600 - 127)
    np.testing.assert_array_equal(frame.samples.real * 32768, pairs[:, 0])
    np.testing.assert_array_equal(frame.samples.imag * 32768, pairs[:, 1])
    assert frame.samples.dtype == np.complex64


def test_no_fix_values_are_flagged():
    _, data = _frame(gps=(253, 0, 0))
    assert not protocol.decode_iq_frame(data[3:]).has_fix
    _, data = _frame(gps=(252, 0, 0))
    assert protocol.decode_iq_frame(data[3:]).has_fix


@pytest.mark.parametrize("cut", [1, 10, 1000, 2064])
def test_truncated_frame_is_a_protocol_error(cut):
    _, data = _frame()
    with pytest.raises(ProtocolError, match="expected"):
        protocol.decode_iq_frame(data[3:-cut])


def test_frame_without_iq_flag_is_rejected():
    _, data = _frame()
    with pytest.raises(ProtocolError, match="not an IQ frame"):
        protocol.decode_iq_frame(b"\x00" + data[4:])


@given(st.binary(max_size=3000))
def test_frame_parser_raises_only_protocol_error(data):
    try:
        _tag, body = protocol.split_tag(data)
        frame = protocol.decode_iq_frame(body)
    except ProtocolError:
        return
    assert len(frame.samples) == FRAME_SAMPLES


def test_msg_round_trip_with_percent_encoding():
    data = protocol.encode_msg({"audio_rate": 12000, "sample_rate": "12001.135", "name": "a b&c"})
    tag, body = protocol.split_tag(data)
    assert tag == "MSG"
    assert protocol.decode_params(body) == {
        "audio_rate": "12000",
        "sample_rate": "12001.135",
        "name": "a b&c",
    }


def test_commands_are_what_a_kiwisdr_expects():
    assert protocol.cmd_auth("") == "SET auth t=kiwi p="
    assert protocol.cmd_auth("se cret") == "SET auth t=kiwi p=se%20cret"
    assert protocol.cmd_ar_ok(12000, 44100) == "SET AR OK in=12000 out=44100"
    assert protocol.cmd_mod(77_500, -6000, 6000) == (
        "SET mod=iq low_cut=-6000 high_cut=6000 freq=77.500"
    )
    assert protocol.cmd_mod(10_000_001.4, -5000, 5000).endswith("freq=10000.001")
    assert protocol.cmd_setup("me")[:3] == [
        "SET squelch=0 max=0",
        "SET genattn=0",
        "SET gen=0 mix=-1",
    ]
    assert protocol.cmd_agc(False).startswith("SET agc=0 ")
    assert protocol.cmd_keepalive() == "SET keepalive"


def test_smeter_conversion():
    assert protocol.smeter_to_dbm(0) == -127.0
    assert protocol.dbm_to_smeter(-73.0) == 540
    assert protocol.smeter_to_dbm(protocol.dbm_to_smeter(-42.3)) == pytest.approx(-42.3)
    assert protocol.dbm_to_smeter(-500) == 0
    assert protocol.dbm_to_smeter(float("-inf")) == 0
    assert protocol.dbm_to_smeter(float("nan")) == 0


def test_split_tag_rejects_short_and_binary_tags():
    with pytest.raises(ProtocolError):
        protocol.split_tag(b"SN")
    with pytest.raises(ProtocolError):
        protocol.split_tag(b"\xff\xfe\xfdxyz")


def test_int16_quantisation_saturates():
    pairs = protocol.to_int16_pairs(np.array([2 + 2j, -2 - 2j, 0.5 - 0.25j], np.complex64))
    np.testing.assert_array_equal(pairs, [[32767, 32767], [-32768, -32768], [16384, -8192]])


def test_announced_numbers_are_parsed_into_range_or_refused():
    assert protocol.parse_number({"audio_rate": "12000"}, "audio_rate", 1000, 100_000) == 12000
    for bad in ("abc", "inf", "nan", "-5", "9" * 400, ""):
        with pytest.raises(ProtocolError, match="audio_rate"):
            protocol.parse_number({"audio_rate": bad}, "audio_rate", 1000, 100_000)
    with pytest.raises(ProtocolError, match="not a KiwiSDR IQ rate"):
        protocol.parse_sample_rate({"sample_rate": "99999"})
    assert protocol.parse_sample_rate({"sample_rate": "12001.135"}) == pytest.approx(12001.135)
    assert len(protocol.shown("A" * 100_000)) < 80


def test_an_impossible_s_meter_reading_is_unknown_not_infinite():
    from heimdall_lab.dataset import mean_db

    assert protocol.smeter_to_dbm(470) == pytest.approx(-80.0)
    assert np.isnan(protocol.smeter_to_dbm(0xFFFF))
    assert mean_db(np.array([6426.0, 6426.0])) == pytest.approx(6426.0)  # no overflow

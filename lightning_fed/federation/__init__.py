"""The federation: devices as data, what they share, how their messages meet at the server."""

from lightning_fed.federation.aggregation import RunningSum
from lightning_fed.federation.compression import Compression
from lightning_fed.federation.device_state import DeviceState, DeviceStates, device_seed
from lightning_fed.federation.health import DeviceFailed, NonFiniteError
from lightning_fed.federation.hosting import check_processes, hosted_devices
from lightning_fed.federation.sharing import SharedTensor, SharingPlan
from lightning_fed.federation.transport import TRANSPORTS, AllGather, AllReduce, InProcess, make_transport

__all__ = [
    "TRANSPORTS",
    "AllGather",
    "AllReduce",
    "Compression",
    "DeviceFailed",
    "DeviceState",
    "DeviceStates",
    "InProcess",
    "NonFiniteError",
    "RunningSum",
    "SharedTensor",
    "SharingPlan",
    "check_processes",
    "device_seed",
    "hosted_devices",
    "make_transport",
]

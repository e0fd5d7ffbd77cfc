"""The trainer cores: what runs the contract's programs (hw/trainers/core.py declares what a
core is).  :class:`~hw.trainers.trainer.Trainer` is the parallel core of the ECP5 boards,
:class:`~hw.trainers.serial_trainer.SerialTrainer` the one-multiplier core of the
iCEBreaker; :class:`~hw.trainers.host_port.HostPort` is the host's side both share."""

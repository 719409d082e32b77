"""Scanner intake: adapters that receive X-ray images and the matcher that pairs them with
parcels (the :class:`controller.core.ports.ImageSource` port). See ``docs/scanner-intake.md``."""

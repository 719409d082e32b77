"""The hub's digital twin: a SimPy plant model, the controller in the loop, studies and replay."""

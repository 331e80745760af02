"""Moving compressed bytes between ranks: `Communicator` (byte collectives and counters),
aggregators (compressed means, majority vote), topologies and gossip, the network cost model."""

"""Pure logic: keys, policies, the guard, value encoding, wire shapes. No I/O."""

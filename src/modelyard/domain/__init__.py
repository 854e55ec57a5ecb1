"""Pure types and rules. Imports nothing else of Modelyard and does no IO."""

"""Speech encoders, connectors, the SpeechLLM and speech-text interleaving."""

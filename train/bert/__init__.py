"""BERT-style masked LM over the ASR vocabulary: the teacher of interAED-KD."""
